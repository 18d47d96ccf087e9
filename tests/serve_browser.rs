//! The knob page in headless Chromium: runs serve/tests/browser.sh against this build's
//! binary. The script skips, with one line, where Chromium, node or playwright-core is missing.

#[test]
fn knob_page_shows_what_the_api_returns_in_a_real_browser() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shot = repo.join("target/serve-knob.png");
    let out = std::process::Command::new("bash")
        .arg(repo.join("serve/tests/browser.sh"))
        .arg(&shot)
        .env("ALENS", env!("CARGO_BIN_EXE_alens"))
        .current_dir(repo)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", stdout.trim());
}
