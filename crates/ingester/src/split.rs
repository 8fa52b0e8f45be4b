//! Finding exactly the points InfluxDB refuses in a write of several batches: a 413 or a
//! refusal (400, partial write, any other 4xx) splits the request in halves (at batch
//! boundaries while it spans several batches, then by lines) until every piece is
//! stored or is a single refused point. The writing is a closure, so the rule is
//! unit-tested without a server.
//!
//! Rewriting a piece whose good points InfluxDB 1.x already stored in a partial write is
//! harmless: writes are idempotent.

use std::collections::VecDeque;
use std::future::Future;

use weathervane_core::influx::InfluxError;

/// One line of the request: (batch index in the request, line index in the batch).
pub type LineId = (usize, usize);

/// A point InfluxDB refused for good, with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub line: LineId,
    pub reason: String,
}

/// Writes the lines of batches of `sizes[b]` lines each through `write` (which gets the
/// lines of one piece, in order), splitting on a 413 or a refusal. Returns the refused
/// points, or the first error that calls for a retry of the whole request (an outage,
/// refused credentials, no database): the caller retries later from the start.
pub async fn write_finding_refusals<F, Fut>(
    sizes: &[usize],
    mut write: F,
) -> Result<Vec<Refusal>, InfluxError>
where
    F: FnMut(Vec<LineId>) -> Fut,
    Fut: Future<Output = Result<(), InfluxError>>,
{
    let all: Vec<LineId> = sizes
        .iter()
        .enumerate()
        .flat_map(|(batch, size)| (0..*size).map(move |line| (batch, line)))
        .collect();
    let mut refused = Vec::new();
    let mut todo = VecDeque::new();
    if !all.is_empty() {
        todo.push_back(all);
    }
    while let Some(piece) = todo.pop_front() {
        let reason = match write(piece.clone()).await {
            Ok(()) => continue,
            Err(InfluxError::TooLarge { body, .. }) => {
                format!("request too large (413) even for this point alone: {body}")
            }
            Err(InfluxError::Rejected { body, .. }) => {
                // InfluxDB 1.x says how many points of the request it dropped; all of
                // them means there is no good point left to find in this piece.
                let (reason, dropped) = point_reason(&body);
                if dropped == Some(piece.len()) && piece.len() > 1 {
                    refused.extend(piece.into_iter().map(|line| Refusal {
                        line,
                        reason: reason.clone(),
                    }));
                    continue;
                }
                reason
            }
            Err(error) => return Err(error),
        };
        if piece.len() == 1 {
            refused.push(Refusal {
                line: piece[0],
                reason,
            });
            continue;
        }
        let (first, second) = halves(piece);
        todo.push_front(second);
        todo.push_front(first);
    }
    Ok(refused)
}

/// Two halves of a piece of two lines or more: at the batch boundary nearest the middle
/// while it spans several batches, else at its middle line.
fn halves(mut piece: Vec<LineId>) -> (Vec<LineId>, Vec<LineId>) {
    let middle = piece.len() / 2;
    let boundaries = (1..piece.len()).filter(|&i| piece[i].0 != piece[i - 1].0);
    let at = boundaries
        .min_by_key(|&i| i.abs_diff(middle))
        .unwrap_or(middle);
    let second = piece.split_off(at);
    (piece, second)
}

/// InfluxDB's reason without the ` dropped=N` of an InfluxDB 1.x partial write, which
/// counts the request's points, not this one's (so a point's reason is the same however
/// its batch was grouped), and that count.
fn point_reason(body: &str) -> (String, Option<usize>) {
    let Some((reason, tail)) = body.rsplit_once(" dropped=") else {
        return (body.to_owned(), None);
    };
    match tail.trim().parse() {
        Ok(count) => (reason.trim_end().to_owned(), Some(count)),
        Err(_) => (body.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::time::Duration;

    use super::*;

    fn rejected(body: &str) -> InfluxError {
        InfluxError::Rejected {
            url: "u".into(),
            status: 400,
            body: body.into(),
        }
    }

    fn run<F>(sizes: &[usize], mut answer: F) -> (Result<Vec<Refusal>, InfluxError>, Vec<usize>)
    where
        F: FnMut(&[LineId]) -> Result<(), InfluxError>,
    {
        let requests = RefCell::new(Vec::new());
        let result = block_on(write_finding_refusals(sizes, |piece| {
            requests.borrow_mut().push(piece.len());
            let result = answer(&piece);
            async move { result }
        }));
        (result, requests.into_inner())
    }

    /// Runs a future of these tests to its end.
    fn block_on<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_good_request_is_one_write() {
        let (result, requests) = run(&[3, 2], |_| Ok(()));
        assert_eq!(result.unwrap(), vec![]);
        assert_eq!(requests, vec![5]);
        let (result, requests) = run(&[], |_| Ok(()));
        assert_eq!((result.unwrap(), requests), (vec![], vec![]));
    }

    #[test]
    fn a_refused_point_is_found_exactly_and_the_rest_is_written() {
        let bad = (2, 1);
        let stored: RefCell<Vec<LineId>> = RefCell::new(Vec::new());
        let (result, _) = run(&[4, 4, 4, 4], |piece| {
            if piece.contains(&bad) {
                // Like InfluxDB 1.x: the good points of a partial write are stored.
                stored
                    .borrow_mut()
                    .extend(piece.iter().filter(|l| **l != bad));
                Err(rejected(
                    "partial write: field type conflict: input field \"uv\" dropped=1",
                ))
            } else {
                stored.borrow_mut().extend(piece);
                Ok(())
            }
        });
        assert_eq!(
            result.unwrap(),
            vec![Refusal {
                line: bad,
                reason: "partial write: field type conflict: input field \"uv\"".into()
            }]
        );
        let mut stored = stored.into_inner();
        stored.sort();
        stored.dedup();
        assert_eq!(stored.len(), 15, "every other point is stored");
    }

    #[test]
    fn too_large_splits_at_batch_boundaries_then_lines_and_never_refuses_a_fitting_point() {
        let (result, requests) = run(&[4, 4, 4, 4], |piece| {
            if piece.len() > 3 {
                Err(InfluxError::TooLarge {
                    url: "u".into(),
                    body: "too large".into(),
                })
            } else {
                Ok(())
            }
        });
        assert_eq!(result.unwrap(), vec![]);
        // 16 → 8 + 8 → 4 + 4 (batches) → 2 + 2 (lines) each.
        assert_eq!(requests, vec![16, 8, 4, 2, 2, 4, 2, 2, 8, 4, 2, 2, 4, 2, 2]);
        let (result, _) = run(&[1, 1], |_| {
            Err(InfluxError::TooLarge {
                url: "u".into(),
                body: "".into(),
            })
        });
        assert_eq!(
            result.unwrap().len(),
            2,
            "a single point too large is refused"
        );
    }

    #[test]
    fn halves_prefer_the_batch_boundary_nearest_the_middle() {
        let piece = vec![(0, 0), (1, 0), (1, 1), (1, 2), (1, 3), (2, 0)];
        let (a, b) = halves(piece);
        assert_eq!((a.len(), b.len()), (1, 5));
        let (a, b) = halves(vec![(0, 0), (0, 1), (0, 2)]);
        assert_eq!((a, b), (vec![(0, 0)], vec![(0, 1), (0, 2)]));
    }

    #[test]
    fn a_piece_dropped_whole_is_refused_whole_without_more_requests() {
        let (result, requests) = run(&[3], |_| Err(rejected("partial write: x dropped=3")));
        assert_eq!(result.unwrap().len(), 3);
        assert_eq!(requests, vec![3]);
    }

    #[test]
    fn an_outage_or_refused_credentials_midway_retry_the_whole_request() {
        let mut calls = 0;
        let (result, _) = run(&[2, 2], |_| {
            calls += 1;
            if calls == 1 {
                Err(rejected("unable to parse 'x': bad"))
            } else {
                Err(InfluxError::Unavailable {
                    url: "u".into(),
                    reason: "429".into(),
                    retry_after: Some(Duration::from_secs(1)),
                })
            }
        });
        assert_eq!(
            result.unwrap_err().retry_after(),
            Some(Duration::from_secs(1))
        );
        let (result, _) = run(&[1], |_| {
            Err(InfluxError::Unauthorized {
                url: "u".into(),
                status: 401,
                body: "authorization failed".into(),
            })
        });
        assert!(result.unwrap_err().is_retriable());
    }

    #[test]
    fn a_point_s_reason_leaves_out_the_request_s_dropped_count() {
        assert_eq!(
            point_reason("partial write: a dropped=12"),
            ("partial write: a".to_owned(), Some(12))
        );
        assert_eq!(
            point_reason("unable to parse 'x dropped=y': bad"),
            ("unable to parse 'x dropped=y': bad".to_owned(), None)
        );
    }
}
