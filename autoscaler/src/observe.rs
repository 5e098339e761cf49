//! Observations: every period, count the status events seen in it the way
//! the seed does and publish the result.

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use kumulus_core::event::{EventKind, StatusEvent};
use kumulus_core::observation::{Observation, ObservationSink};

/// The seed's observation of one period from the events seen in it:
/// arrivals (`queued`), services (`started`), finished (any end), and the
/// mean run time in seconds of the jobs that finished (0 when none did).
pub fn observe(events: &[StatusEvent], period_end: DateTime<Utc>) -> Observation {
    let mut arrivals = 0u64;
    let mut services = 0u64;
    let mut finished = 0u64;
    let mut run_secs = Vec::new();
    for ev in events {
        match &ev.kind {
            // A job queued again is work arriving again.
            EventKind::Queued { .. } | EventKind::Requeued { .. } => arrivals += 1,
            EventKind::Started => services += 1,
            EventKind::Heartbeat => {}
            EventKind::Finished(o) => {
                finished += 1;
                if let Some(s) = o.elapsed_secs {
                    run_secs.push(s);
                }
            }
        }
    }
    let avg_response_time = if run_secs.is_empty() {
        0.0
    } else {
        run_secs.iter().sum::<f64>() / run_secs.len() as f64
    };
    Observation {
        avg_rate_of_arrival: arrivals as f64,
        avg_rate_of_service: services as f64,
        avg_rate_of_finished: finished as f64,
        avg_response_time,
        timestamp: period_end.timestamp_millis(),
    }
}

/// Publishes one observation every `period` from `events` until `shutdown`.
pub async fn run_observer(
    mut events: BoxStream<'static, StatusEvent>,
    sink: Arc<dyn ObservationSink>,
    period: Duration,
    shutdown: CancellationToken,
) {
    let mut seen = Vec::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.next() => match ev {
                Some(ev) => seen.push(ev),
                None => return,
            },
            _ = tick.tick() => {
                let obs = observe(&seen, Utc::now());
                seen.clear();
                if let Err(e) = sink.publish(&obs).await {
                    tracing::warn!(error = %e, "could not publish an observation");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumulus_core::event::Outcome;
    use kumulus_core::job::{JobId, JobState};

    fn ev(kind: EventKind) -> StatusEvent {
        StatusEvent::new(JobId::new(), "ana", kind)
    }

    fn done(secs: Option<f64>) -> EventKind {
        EventKind::Finished(Outcome {
            state: JobState::Succeeded,
            started_at: None,
            elapsed_secs: secs,
            exit_code: Some(0),
            error: None,
            files: vec![],
            infrastructure: false,
        })
    }

    #[test]
    fn counts_a_period_like_the_seed() {
        let now = Utc::now();
        let table: Vec<(Vec<StatusEvent>, [f64; 4])> = vec![
            (vec![], [0.0, 0.0, 0.0, 0.0]),
            (
                vec![
                    ev(EventKind::Queued { submitted_at: now }),
                    ev(EventKind::Queued { submitted_at: now }),
                    ev(EventKind::Started),
                ],
                [2.0, 1.0, 0.0, 0.0],
            ),
            (
                vec![ev(done(Some(1.0))), ev(done(Some(3.0))), ev(done(None))],
                [0.0, 0.0, 3.0, 2.0],
            ),
        ];
        for (events, [a, s, f, r]) in table {
            let o = observe(&events, now);
            assert_eq!(
                [
                    o.avg_rate_of_arrival,
                    o.avg_rate_of_service,
                    o.avg_rate_of_finished,
                    o.avg_response_time
                ],
                [a, s, f, r]
            );
            assert_eq!(o.timestamp, now.timestamp_millis());
        }
    }
}
