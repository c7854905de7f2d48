//! Fan-out under load: many clients in one channel all get every message in
//! order, and a client that never reads is dropped without holding up the
//! others. Counts and order are asserted, never timings.

mod support;

use std::thread;
use std::time::Duration;

use serde_json::json;
use support::{watchdog, Relay, Ws};

/// Every client here is on 127.0.0.1: lift the per-connection, per-address
/// and per-channel limits (tests/relay_trust.rs tests those).
const FAST: &[&str] = &[
    "--rate-burst",
    "100000",
    "--rate-per-sec",
    "100000",
    "--max-per-ip",
    "10000",
    "--connect-rate-burst",
    "10000",
];

#[test]
fn relay_200_clients_receive_every_message_in_order() {
    let _w = watchdog(Duration::from_secs(120));
    let relay = Relay::start(FAST);
    let n = 200;
    let mut clients: Vec<Ws> = (0..n)
        .map(|i| {
            let (mut c, _) = relay.agent(&format!("c{i}"));
            c.join("#general");
            c
        })
        .collect();
    // Three senders interleave; each receiver must see each sender's
    // messages in the order sent, and all receivers the same total order.
    let per_sender = 20;
    for round in 0..per_sender {
        for (s, c) in clients.iter_mut().take(3).enumerate() {
            c.msg("#general", &format!("s{s}-{round}"));
        }
    }
    let mut reference: Option<Vec<String>> = None;
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < 3 * per_sender {
            let v = c.recv();
            if v["type"] == "MSG" {
                got.push(v["content"].as_str().unwrap().to_string());
            }
        }
        for s in 0..3 {
            let mine: Vec<&String> = got
                .iter()
                .filter(|m| m.starts_with(&format!("s{s}-")))
                .collect();
            let want: Vec<String> = (0..per_sender).map(|r| format!("s{s}-{r}")).collect();
            assert_eq!(
                mine,
                want.iter().collect::<Vec<_>>(),
                "client {i} sender {s}"
            );
        }
        match &reference {
            None => reference = Some(got),
            Some(r) => assert_eq!(r, &got, "client {i} saw a different order"),
        }
        c.ping();
    }
}

#[test]
fn relay_drops_a_client_that_never_reads() {
    let _w = watchdog(Duration::from_secs(120));
    let mut args = FAST.to_vec();
    args.extend(["--outbox", "16"]);
    let relay = Relay::start(&args);
    let (mut sender, _) = relay.agent("sender");
    let (mut reader, _) = relay.agent("reader");
    let (mut sleeper, sleeper_id) = relay.agent("sleeper");
    sleeper.join("#general");
    sender.join("#general");
    reader.join("#general");
    sender.until("AGENT_JOINED");

    // The reader drains on its own thread, counting in order, and reports
    // progress so the sender never gets far ahead of it: only the sleeper
    // may fall behind.
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<u64>();
    let reader_thread = thread::spawn(move || {
        let mut next = 0u64;
        let mut saw_left = false;
        loop {
            let v = reader.recv();
            match v["type"].as_str() {
                Some("MSG") => {
                    let content = v["content"].as_str().unwrap();
                    if content == "done" {
                        // Hand the connection back so it stays a member.
                        return (next, saw_left, reader);
                    }
                    let n: u64 = content[..content.find(':').unwrap()].parse().unwrap();
                    assert_eq!(n, next, "reader sees every message in order");
                    next += 1;
                    let _ = ack_tx.send(next);
                }
                Some("AGENT_LEFT") => saw_left = true,
                _ => {}
            }
        }
    });

    // Fill the sleeper's socket buffers and outbox with 4 KiB messages;
    // the sender reads its own echoes, so only the sleeper falls behind.
    let pad = "x".repeat(4000);
    let mut sent = 0u64;
    let mut dropped = false;
    let mut acked = 0u64;
    while sent < 20_000 {
        while sent - acked > 32 {
            acked = ack_rx.recv().expect("reader alive");
        }
        sender.msg("#general", &format!("{sent}:{pad}"));
        sent += 1;
        loop {
            let v = sender.recv();
            if v["type"] == "AGENT_LEFT" && v["agent"] == sleeper_id.as_str() {
                dropped = true;
            }
            if v["type"] == "MSG" {
                break;
            }
        }
        if dropped {
            break;
        }
    }
    assert!(
        dropped,
        "the never-reading client was dropped after {sent} messages"
    );
    // Everyone else keeps going.
    for _ in 0..10 {
        sender.msg("#general", &format!("{sent}:after"));
        sent += 1;
        sender.until("MSG");
    }
    sender.send(json!({"type": "MSG", "to": "#general", "content": "done"}));
    let (count, saw_left, _reader) = reader_thread.join().unwrap();
    assert_eq!(count, sent);
    assert!(saw_left);
    sender.send(json!({"type": "LIST_AGENTS", "channel": "#general"}));
    assert_eq!(sender.until("AGENTS")["list"].as_array().unwrap().len(), 2);
    drop(sleeper);
}
