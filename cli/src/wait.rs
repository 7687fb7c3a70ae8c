//! Waiting for the cluster to carry out an admin request.
//!
//! Split, move and leader transfer are operators: the directory accepts the
//! request at once and the region's leader carries it out over the next
//! heartbeats. The commands therefore poll the directory until the region
//! shows the result, with a spinner on stderr (drawn only when stderr is a
//! terminal, so scripts and JSON output see nothing of it), and give up
//! with a clear message after `--wait-timeout`.
//!
//! Errors while polling (a directory leader change, a slow answer) do not
//! end the wait: they are shown on the spinner and reported if the wait
//! times out.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::conn::seconds;

/// How often the directory is asked again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
const SPINNER_TICK: Duration = Duration::from_millis(100);

/// What one poll found.
pub enum Poll<T> {
    /// The request is carried out.
    Done(T),
    /// Not yet; the text says how far it got.
    Pending(String),
    /// It will not happen (the operator failed or was dropped): the wait
    /// ends with this error. Errors returned by the step itself are taken
    /// as passing trouble (a slow answer) and the wait goes on.
    Failed(anyhow::Error),
}

/// Polls `step` until it reports [`Poll::Done`], for at most `timeout`.
/// `what` completes "waiting for ..." (for example `region 5 to split`);
/// `hint` is added to the timeout message.
pub async fn until<T>(
    what: &str,
    timeout: Duration,
    hint: &str,
    mut step: impl AsyncFnMut() -> Result<Poll<T>>,
) -> Result<T> {
    let spinner = Spinner::new(format!("waiting for {what}"));
    spinner.println(format!("waiting for {what} (up to {})", seconds(timeout)));
    let deadline = Instant::now() + timeout;
    loop {
        let last = match step().await {
            Ok(Poll::Done(v)) => return Ok(v),
            Ok(Poll::Failed(e)) => return Err(e),
            Ok(Poll::Pending(status)) => status,
            Err(e) => format!("{e:#}"),
        };
        spinner.set(last.clone());
        if Instant::now() + POLL_INTERVAL > deadline {
            bail!(
                "gave up waiting for {what} after {} (last seen: {last}); {hint}",
                seconds(timeout)
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A spinner on stderr that clears itself when dropped.
pub struct Spinner(ProgressBar);

impl Spinner {
    pub fn new(message: String) -> Self {
        let pb = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed}] {wide_msg}") {
            pb.set_style(style);
        }
        pb.set_message(message);
        pb.enable_steady_tick(SPINNER_TICK);
        Spinner(pb)
    }

    pub fn set(&self, message: String) {
        self.0.set_message(message);
    }

    /// A line above the spinner (shown only when the spinner is).
    pub fn println(&self, line: String) {
        self.0.println(line);
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn polls_until_done() {
        let mut n = 0;
        let got = until("test", Duration::from_secs(10), "", async || {
            n += 1;
            Ok(if n < 3 {
                Poll::Pending(format!("poll {n}"))
            } else {
                Poll::Done(n)
            })
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn a_failed_poll_ends_the_wait_but_an_error_does_not() {
        let mut n = 0;
        let err = until("test", Duration::from_secs(10), "", async || {
            n += 1;
            match n {
                1 => Err(anyhow::anyhow!("slow answer")),
                2 => Ok(Poll::Pending("going".into())),
                _ => Ok(Poll::<()>::Failed(anyhow::anyhow!("operator dropped"))),
            }
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "operator dropped");
        assert_eq!(n, 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_status() {
        let err = until(
            "region 5 to split",
            Duration::from_millis(300),
            "check later",
            async || Ok(Poll::<()>::Pending("epoch 1/1".into())),
        )
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "gave up waiting for region 5 to split after 0.3s (last seen: epoch 1/1); check later"
        );
    }
}
