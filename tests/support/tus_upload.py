"""A real tus client for the upload tests: tuspy (PyPI `tuspy`), driven from the command line.

Uploads FILE to ENDPOINT in chunks, or resumes the upload at --url from the offset the
server reports (HEAD). With --chunks N it sends N chunks and exits, as an interrupted
client would. Prints one JSON line: {"url": ..., "offset": ...}.
"""

import argparse
import json
import os
import sys

from tusclient import client


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("file")
    parser.add_argument("--url")
    parser.add_argument("--chunk-size", type=int, default=64 * 1024)
    parser.add_argument("--chunks", type=int)
    parser.add_argument("--checksum", action="store_true")
    parser.add_argument("--token")
    args = parser.parse_args()
    headers = {"Authorization": "Bearer " + args.token} if args.token else {}
    tus = client.TusClient(args.endpoint, headers=headers)
    uploader = tus.uploader(
        args.file,
        url=args.url,
        chunk_size=args.chunk_size,
        metadata={"filename": os.path.basename(args.file)},
        upload_checksum=args.checksum,
        retries=0,
    )
    if args.chunks is None:
        uploader.upload()
    else:
        for _ in range(args.chunks):
            if uploader.offset >= uploader.get_file_size():
                break
            uploader.upload_chunk()
    print(json.dumps({"url": uploader.url, "offset": uploader.offset}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
