use std::io::{Read, Write};
use std::time::{Duration, Instant};
use weathervane_harness::*;
fn ok(port: u16, req: &[u8], want: &str) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let _ = s.write_all(req);
    let mut b = vec![0; 64];
    matches!(s.read(&mut b), Ok(n) if String::from_utf8_lossy(&b[..n]).contains(want))
}
fn main() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let p = free_port().unwrap();
        let mut r = ManagedProcess::new("r", "redis-server", dir.path()).args(["--port", &p.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        let t = Instant::now(); r.start().unwrap();
        while !ok(p, b"PING\r\n", "+PONG") { std::thread::sleep(Duration::from_millis(1)) }
        let tr = t.elapsed();
        let p2 = free_port().unwrap();
        let d = dir.path().join(p2.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("c.conf"), format!("bind-address = \"127.0.0.1:{}\"\n[meta]\n dir = \"{0}/m\"\n[data]\n dir = \"{0}/d\"\n wal-dir = \"{0}/w\"\n[http]\n bind-address = \"127.0.0.1:{p2}\"\n", d.display())).unwrap();
        let mut i = ManagedProcess::new("i", "influxd", dir.path()).args(["run", "-config"]).arg(d.join("c.conf"));
        let t = Instant::now(); i.start().unwrap();
        while !ok(p2, b"GET /ping HTTP/1.0\r\n\r\n", " 204 ") { std::thread::sleep(Duration::from_millis(1)) }
        println!("redis {tr:?} influxd {:?}", t.elapsed());
    }
}
