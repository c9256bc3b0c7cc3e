//! The local demo: the whole mesh on one machine, no cluster needed (root needed, for
//! network namespaces and iptables).
//!
//! Starts the destination and identity services in local mode, a client pod and two
//! `web` pods behind a TrafficSplit, then walks a canary from 100/0 through 90/10 and
//! 50/50 to 0/100, printing where the client's requests landed and who the servers
//! saw calling. Run it with `sudo cargo run -p integration --bin mesh-demo`.

// Printing the walkthrough is this program's job.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use anyhow::Context;
use integration::shop::{Shop, share};

fn main() -> anyhow::Result<()> {
    println!("starting the control plane and three meshed pods in network namespaces…");
    let shop = Shop::start(100, 0).context("starting the mesh (this needs root)")?;
    println!(
        "control plane at {}, client at {}, web v1 at {}, web v2 at {}",
        shop.ctrl.ip, shop.client.ip, shop.web[0].ip, shop.web[1].ip
    );
    for (v1, v2) in [(100, 0), (90, 10), (50, 50), (0, 100)] {
        shop.set_split(v1, v2)?;
        // The destination service picks up the edit within milliseconds; give the
        // proxies' streams a moment before measuring.
        std::thread::sleep(Duration::from_millis(500));
        let answers = shop.call_web(100)?;
        let ok = answers.iter().filter(|a| a.status == 200).count();
        let client = answers
            .first()
            .map(|a| a.client_id.as_str())
            .unwrap_or("(none)");
        println!(
            "split {v1:>3}/{v2:<3} → v1 {:>3}, v2 {:>3} of 100 ({ok} ok); server saw client {client}",
            share(&answers, "v1"),
            share(&answers, "v2"),
        );
    }
    let metrics = shop.metrics(&shop.client)?;
    println!("\nclient proxy metrics (excerpt):");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("request_total") || l.starts_with("response_total"))
        .filter(|l| !l.ends_with(" 0"))
        .take(6)
    {
        println!("  {line}");
    }
    Ok(())
}
