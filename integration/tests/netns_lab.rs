//! The lab itself: two pods on one bridge reach each other.

#![allow(clippy::expect_used)]

use std::time::Duration;

use integration::netns::Lab;
use integration::process::Proc;

#[test]
fn pods_on_one_bridge_reach_each_other() {
    let mut lab = Lab::new().expect("lab");
    let a = lab.pod("a").expect("pod a");
    let b = lab.pod("b").expect("pod b");
    let mut server = b.command("python3");
    server.args(["-m", "http.server", "8080", "--bind", &b.ip.to_string()]);
    let _server = Proc::spawn("http.server", server);
    let url = format!("http://{}:8080/", b.ip);
    integration::assert_eventually!(
        a.run(&["curl", "-sf", "-o", "/dev/null", "--max-time", "1", &url])
            .is_ok(),
        Duration::from_secs(10),
        "pod a could not reach {url}"
    );
}
