//! Faults: Mosquitto killed and restarted again and again while docks keep asking. Every
//! request sent while the broker was up, and far enough from a kill for its answer to make it
//! back, must be answered exactly once; the service must come back every time and never exit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::mqtt::Mosquitto;
use crate::{Report, Scale};

/// How far before a kill (and after the service is back) a request may be lost.
const MARGIN: Duration = Duration::from_secs(1);

type Log = Arc<Mutex<(Vec<(String, Instant)>, HashMap<String, usize>)>>;

/// A dock that reconnects and subscribes again by itself, sending a request every `every`.
fn dock(port: u16, sn: String, log: Log, stop: Arc<std::sync::atomic::AtomicBool>) {
    tokio::spawn(async move {
        let mut options = MqttOptions::new(format!("fault-{sn}"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let topic = format!("thing/product/{sn}/requests_reply");
        let (sub, log2) = (client.clone(), log.clone());
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub.try_subscribe(&topic, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&p.payload).unwrap_or_default();
                        if v["data"]["result"] == 0
                            && let Some(tid) = v["tid"].as_str()
                        {
                            *log2.lock().unwrap().1.entry(tid.to_owned()).or_default() += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let mut i = 0_usize;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let tid = format!("{sn}-{i}");
            let payload = format!(
                r#"{{"tid":"{tid}","bid":"b","method":"storage_config_get","timestamp":1,"data":{{"module":0}}}}"#
            );
            // try_publish: while the broker is down the request is not sent at all, rather
            // than queued and sent late.
            if client
                .try_publish(
                    format!("thing/product/{sn}/requests"),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .is_ok()
            {
                log.lock().unwrap().0.push((tid, Instant::now()));
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

pub async fn run(scale: &Scale) -> Report {
    let Some(broker) = Mosquitto::unthrottled() else {
        return Report::lines(vec![
            "faults: skipped (mosquitto is not installed)".to_owned(),
        ]);
    };
    let port = broker.port;
    let service = crate::start(&[("STSGATE_MQTT__URL", &format!("mqtt://127.0.0.1:{port}"))]).await;
    let log: Log = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for d in 0..scale.fault_docks {
        dock(port, format!("FAULT{d:04}"), log.clone(), stop.clone());
    }
    let start = Instant::now();
    let mut outages: Vec<(Instant, Instant)> = Vec::new();
    let mut broker = Some(broker);
    let every = scale.fault_run / u32::try_from(scale.restarts + 1).expect("restarts");
    for _ in 0..scale.restarts {
        tokio::time::sleep(every).await;
        let killed = Instant::now();
        drop(broker.take());
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker = Some(Mosquitto::unthrottled_on(port).expect("mosquitto restarts"));
        assert!(
            service.service.wait_ready(Duration::from_secs(60)).await,
            "the service is back after the restart"
        );
        outages.push((killed - MARGIN, Instant::now() + MARGIN));
    }
    tokio::time::sleep(every).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    // Late answers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = start.elapsed();
    let (sent, answered) = {
        let guard = log.lock().unwrap();
        (guard.0.clone(), guard.1.clone())
    };
    let in_outage = |t: Instant| outages.iter().any(|(a, b)| t >= *a && t <= *b);
    let last_due = Instant::now() - Duration::from_secs(2);
    let expected: Vec<_> = sent
        .iter()
        .filter(|(_, t)| !in_outage(*t) && *t < last_due)
        .collect();
    let missing = expected
        .iter()
        .filter(|(tid, _)| !answered.contains_key(tid))
        .count();
    let twice = answered.values().filter(|n| **n > 1).count();
    let alive = service.service.readiness.mqtt();
    service.stop().await;
    drop(broker);
    let lines = vec![
        format!(
            "faults: Mosquitto killed and restarted {} times in {:.0} s while {} docks sent a request every 50 ms each",
            scale.restarts,
            elapsed.as_secs_f64(),
            scale.fault_docks
        ),
        format!(
            "  {} requests sent, {} while the broker was up and clear of a kill by {MARGIN:?}: {} answered, {missing} missing; {twice} answered more than once",
            sent.len(),
            expected.len(),
            expected.len() - missing
        ),
        format!("  service subscribed at the end: {alive}"),
    ];
    Report {
        lines,
        checks: vec![
            (format!("no request lost ({missing} missing)"), missing == 0),
            (format!("none answered twice ({twice})"), twice == 0),
            ("the service subscribed at the end".to_owned(), alive),
        ],
    }
}
