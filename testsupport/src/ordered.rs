//! Futures run together but started in a fixed order.
//!
//! Commands sent "back to back" in a test must leave in the order the test
//! lists them: [`join_in_order`] gives each future its first poll before the
//! next one's (so each submits its command before the next does), then
//! polls them all until every one is done.
//!
//! It says nothing about the order in which they *finish* as seen by the
//! test: on a multi-thread runtime the initiator's reader may complete a
//! later command while this poller is between two futures. A test that
//! checks completion order reads it off the wire (the session's trace),
//! never off when its futures happened to be polled.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// A boxed future for [`join_in_order`].
pub type Ordered<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Polls the futures in the order given, each first poll before the next
/// one's, until all are done; returns their outputs in that order.
pub async fn join_in_order<T>(mut futs: Vec<Ordered<'_, T>>) -> Vec<T> {
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn first_polls_follow_the_given_order_and_outputs_keep_it() {
        let started = Mutex::new(Vec::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let out = rt.block_on(async {
            let mut futs: Vec<Ordered<'_, usize>> = Vec::new();
            for i in 0..4usize {
                let started = &started;
                futs.push(Box::pin(async move {
                    started.lock().unwrap().push(i);
                    // Later futures finish first.
                    for _ in 0..(4 - i) {
                        tokio::task::yield_now().await;
                    }
                    i * 10
                }));
            }
            join_in_order(futs).await
        });
        assert_eq!(*started.lock().unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(out, vec![0, 10, 20, 30]);
    }
}
