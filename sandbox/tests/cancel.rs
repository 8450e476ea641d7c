//! `cancel_all` stops every running action of the process, so its tests
//! live in their own test binary: in `modes.rs` it would also cancel the
//! actions of the tests running next to it.

mod common;

use std::time::{Duration, Instant};

use common::{fixture, modes};
use vbuild_sandbox::ExitKind;

#[test]
fn cancel_all_stops_running_actions() {
    for mode in modes("cancel_all_stops_running_actions") {
        let f = fixture();
        let spec = f.sh(mode, "sleep 30 & sleep 30");
        let t = Instant::now();
        let r = std::thread::scope(|s| {
            let h = s.spawn(|| f.run(mode, &spec));
            std::thread::sleep(Duration::from_millis(300));
            vbuild_sandbox::cancel_all();
            h.join().expect("join")
        })
        .expect("run");
        assert_eq!(
            r.outcome.status,
            ExitKind::Signaled(libc::SIGKILL),
            "{mode:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}

#[test]
fn cancel_all_stops_actions_of_many_threads_at_once() {
    // Supervisors started from several threads at once (each sharing the
    // caller's memory) all get the cancellation and each reports its own.
    for mode in modes("cancel_all_stops_actions_of_many_threads_at_once") {
        let fixtures: Vec<_> = (0..4).map(|_| fixture()).collect();
        let t = Instant::now();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = fixtures
                .iter()
                .map(|f| {
                    let spec = f.sh(mode, "sh -c 'sleep 30' & sleep 30");
                    s.spawn(move || f.run(mode, &spec))
                })
                .collect();
            std::thread::sleep(Duration::from_millis(500));
            vbuild_sandbox::cancel_all();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        for r in results {
            let r = r.expect("run");
            assert_eq!(
                r.outcome.status,
                ExitKind::Signaled(libc::SIGKILL),
                "{mode:?}"
            );
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}
