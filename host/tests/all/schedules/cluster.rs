//! Three nodes on a real nats-server share one scheduled rule: every tick is
//! fired by exactly one of them, and when a node goes away the others go on.

use super::*;
use crate::harness::nats::NatsServer;

const MIN: Duration = Duration::from_secs(60);

fn on_jetstream(url: &str) -> TestServer {
    let url = url.to_string();
    TestServer::start_with(move |c| c.server.bus = Some(url))
}

#[test]
fn three_nodes_fire_each_tick_once() {
    let nats = NatsServer::start();
    let mut nodes: Vec<TestServer> = (0..3).map(|_| on_jetstream(&nats.url())).collect();
    let made = nodes[0].aws(
        "PutRule",
        &json!({"Name": "cluster-tick", "ScheduleExpression": "rate(5 minutes)"}),
    );
    assert_eq!(made.status, 200, "{}", made.text);
    // Every node runs the rule (rule changes travel through the store).
    for (i, n) in nodes.iter().enumerate() {
        eventually(
            &format!("node {i} to run the schedule"),
            Duration::from_secs(20),
            || {
                let v = n.get("/v1/schedules").json();
                (v["schedules"][0]["id"] == "rule/default/cluster-tick"
                    && v["schedules"][0]["next_fire"].is_string())
                .then_some(())
            },
        );
    }
    let ticks = |n: &TestServer| scheduled(n).len();
    for round in 1..=3 {
        for n in &nodes {
            advance(n, 5 * MIN);
        }
        eventually(&format!("tick {round}"), Duration::from_secs(20), || {
            (ticks(&nodes[0]) >= round).then_some(())
        });
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            ticks(&nodes[0]),
            round,
            "one fire per tick across the nodes"
        );
    }
    // One node leaves; the two left keep firing, still once per tick.
    drop(nodes.remove(0));
    for round in 4..=5 {
        for n in &nodes {
            advance(n, 5 * MIN);
        }
        eventually(&format!("tick {round}"), Duration::from_secs(20), || {
            (ticks(&nodes[0]) >= round).then_some(())
        });
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(ticks(&nodes[1]), round);
    }
    let times: Vec<Value> = scheduled(&nodes[0])
        .iter()
        .map(|e| e["time"].clone())
        .collect();
    for pair in times.windows(2) {
        assert_eq!(secs_between(&pair[0], &pair[1]), 300, "{times:?}");
    }
}
