//! `meshdns drill`: a loss on paper, changing no answer, whose prediction
//! is what real DNS answers become when the same loss is applied as a
//! drain of 100 in the policy file.

use std::collections::BTreeMap;

use serde_json::Value;

use super::policy::{ASKERS, PolicyFleet, meshdns, meshdns_run, shares, wait_drain};

/// Runs `meshdns drill` with `args`: its report.
async fn drill(args: &[&str]) -> String {
    let mut all = vec!["drill"];
    all.extend_from_slice(args);
    meshdns(&all).await
}

/// The drill's shares for `service` asked from `asker`, `when` (before
/// or after).
fn predicted(report: &Value, service: &str, asker: &str, when: &str) -> BTreeMap<String, f64> {
    let service = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .unwrap_or_else(|| panic!("{service} not in the drill: {report}"));
    let asker = service["askers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["cluster"] == asker)
        .unwrap_or_else(|| panic!("asker {asker} not in the drill"));
    asker[when]["shares"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect()
}

fn close(predicted: &BTreeMap<String, f64>, got: &BTreeMap<String, f64>, what: &str) {
    let served = |m: &BTreeMap<String, f64>| {
        m.iter()
            .filter(|(_, v)| **v > 0.0)
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(served(predicted), served(got), "{what}: served from");
    for (cluster, share) in predicted {
        let real = got.get(cluster).copied().unwrap_or(0.0);
        assert!(
            (share - real).abs() < 0.08,
            "{what}: {cluster} predicted {share:.3}, answered {real:.3}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_predicts_what_the_drain_does() {
    let fleet = PolicyFleet::start("{}", &[]).await;
    let (dns, url) = (fleet.server.dns, fleet.server.grpc_url());
    let report: Value = serde_json::from_str(
        &drill(&[
            "--insecure",
            "--registry",
            &url,
            "--lose",
            "cluster:east-1",
            // --max-answers and --min-healthy: the registry's (it says).
            "--answers",
            "400",
            "--output",
            "json",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(report["lost_clusters"], serde_json::json!(["east-1"]));
    assert_eq!(
        report["for_real"],
        serde_json::json!(["clusters.east-1.drain: 100"])
    );
    let stranded: Vec<&str> = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["no_healthy_left"] == true)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(stranded, ["solo"], "{report}");
    // Nearest first: east-2 is served by east-1 (its region) before, by
    // west-1 (anywhere) after.
    assert_eq!(
        predicted(&report, "api", "east-2", "before"),
        BTreeMap::from([("east-1".to_owned(), 1.0)])
    );
    assert_eq!(
        predicted(&report, "api", "east-2", "after"),
        BTreeMap::from([("west-1".to_owned(), 1.0)])
    );
    // The drill changed no answer; what it predicts before is what DNS
    // answers now.
    for (asker, source) in ASKERS {
        for service in ["web", "api"] {
            let name = format!("{service}.shop.global");
            let got = shares(dns, &name, source, 300).await;
            close(
                &predicted(&report, service, asker, "before"),
                &got,
                &format!("{service} from {asker}, before"),
            );
        }
    }
    // The same loss for real: a drain of 100.
    fleet.write_policy("clusters:\n  east-1:\n    drain: 100\n");
    wait_drain(&url, "east-1", 100).await;
    for (asker, source) in ASKERS {
        for service in ["web", "api", "solo"] {
            let name = format!("{service}.shop.global");
            let got = shares(dns, &name, source, 300).await;
            close(
                &predicted(&report, service, asker, "after"),
                &got,
                &format!("{service} from {asker}, after the drain"),
            );
        }
    }
    // The text report says the same in words.
    let text = drill(&[
        "--insecure",
        "--registry",
        &url,
        "--lose",
        "region:us-east",
        "--max-answers",
        "1",
        "--answers",
        "50",
    ])
    .await;
    assert!(text.contains("clusters east-1, east-2"), "{text}");
    assert!(
        text.contains("clusters.east-1.drain: 100, clusters.east-2.drain: 100"),
        "{text}"
    );
    // A place that holds no cluster is refused, named.
    let (ok, _, stderr) = meshdns_run(&[
        "drill",
        "--insecure",
        "--registry",
        &url,
        "--lose",
        "east-1,zone:nowhere",
    ])
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("--lose") && stderr.contains("zone:nowhere holds no cluster"),
        "{stderr}"
    );
    fleet.stop().await;
}
