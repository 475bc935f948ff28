//! The real binary's directory commands: institution, client and user, with --json output,
//! passwords from stdin, exit codes and one-line errors.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::binary::{BIN, serve};
use crate::harness::txid;

struct Cli {
    url: String,
    data: String,
}

impl Cli {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--server", &self.url, "--data-dir", &self.data])
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tokenledger");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed and print one JSON document.
    #[track_caller]
    fn json(&self, args: &[&str], stdin: Option<&str>) -> serde_json::Value {
        let mut full = args.to_vec();
        full.push("--json");
        let out = self.run(&full, stdin);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {:?}", out.stdout))
    }

    /// Runs a command that must fail with one line on stderr; returns that line.
    #[track_caller]
    fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "{args:?} succeeded");
        let message = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(message.trim_end().lines().count(), 1, "one line: {message}");
        message
    }
}

fn sign_in(url: &str, client: (&str, &str), username: &str, password: &str) -> (u16, serde_json::Value) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let reply = reqwest::Client::new()
            .post(format!("{url}/oauth2/v1/token"))
            .basic_auth(client.0, Some(client.1))
            .header("transactionId", txid())
            .header("institutionId", "00516")
            .form(&[("grant_type", "password"), ("username", username), ("password", password)])
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap())
    })
}

#[test]
fn the_cli_manages_the_directory_with_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let running = serve(dir.path(), &[]);
    let cli = Cli { url: running.url.clone(), data: dir.path().to_str().unwrap().to_owned() };
    let created = cli.json(&["institution", "create", "00516", "--name", "Credit Union"], None);
    assert_eq!(created["institution_id"], "00516");
    let list = cli.json(&["institution", "list"], None);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(cli.json(&["institution", "show", "00516"], None)["name"], "Credit Union");
    let client = cli.json(
        &[
            "client",
            "create",
            "--client-id",
            "mobile",
            "--name",
            "Mobile",
            "--institution",
            "00516",
            "--grant-type",
            "password",
            "--grant-type",
            "refresh_token",
            "--scope",
            "accounts:read",
            "--scope",
            "institution-users:read",
            "--introspect",
        ],
        None,
    );
    let secret = client["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 43);
    assert_eq!(client["introspect"], true);
    assert_eq!(cli.json(&["client", "list", "--institution", "00516"], None)[0]["client_id"], "mobile");
    let user = cli.json(
        &[
            "user",
            "create",
            "--institution",
            "00516",
            "bob",
            "--type",
            "BUSINESS",
            "--first-name",
            "Bob",
            "--customer",
            "id=IC1,member_number=123456789,member_name=Bob Co,customer_type=BUSINESS,primary=true",
            "--password-stdin",
        ],
        Some("bobs password\n"),
    );
    assert_eq!(user["user_type"], "BUSINESS");
    assert_eq!(user["has_password"], true);
    assert_eq!(user["institution_customers"][0]["institution_customer_id"], "IC1");
    // The password was never on the command line, and it works.
    assert_eq!(sign_in(&running.url, ("mobile", &secret), "bob", "bobs password").0, 200);
    let (status, body) = sign_in(&running.url, ("mobile", &secret), "bob", "wrong");
    assert_eq!((status, body["code"].as_str()), (401, Some("CMN_90015")));
    assert_eq!(cli.json(&["user", "show", "--institution", "00516", "bob"], None)["failed_login_count"], 1);
    // Lock, unlock, disable, enable.
    assert_eq!(cli.json(&["user", "lock", "--institution", "00516", "bob"], None)["locked"], true);
    assert_eq!(sign_in(&running.url, ("mobile", &secret), "bob", "bobs password").1["code"], "CMN_90009");
    let unlocked = cli.json(&["user", "unlock", "--institution", "00516", "bob"], None);
    assert_eq!((unlocked["locked"].as_bool(), unlocked["failed_login_count"].as_u64()), (Some(false), Some(0)));
    assert_eq!(cli.json(&["user", "disable", "--institution", "00516", "bob"], None)["disabled"], true);
    assert_eq!(sign_in(&running.url, ("mobile", &secret), "bob", "bobs password").1["code"], "CMN_90016");
    cli.json(&["user", "enable", "--institution", "00516", "bob"], None);
    cli.json(&["user", "set-password", "--institution", "00516", "bob", "--password-stdin"], Some("second pw\n"));
    assert_eq!(sign_in(&running.url, ("mobile", &secret), "bob", "second pw").0, 200);
    let updated = cli.json(&["user", "update", "--institution", "00516", "bob", "--email", "bob@example.com"], None);
    assert_eq!((updated["email"].as_str(), updated["first_name"].as_str()), (Some("bob@example.com"), Some("Bob")));
    assert_eq!(cli.json(&["user", "list", "--institution", "00516"], None)[0]["login_id"], "bob");
    // Secret rotation: without an overlap the old secret stops at once.
    let rotated = cli.json(&["client", "rotate-secret", "mobile"], None);
    let new_secret = rotated["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(sign_in(&running.url, ("mobile", &secret), "bob", "second pw").0, 401);
    assert_eq!(sign_in(&running.url, ("mobile", &new_secret), "bob", "second pw").0, 200);
    let overlapped = cli.json(&["client", "rotate-secret", "mobile", "--overlap-secs", "600"], None);
    assert!(overlapped["previous_secret_valid_until_ms"].as_i64().unwrap() > 0);
    assert_eq!(sign_in(&running.url, ("mobile", &new_secret), "bob", "second pw").0, 200);
    assert_eq!(cli.json(&["client", "disable", "mobile"], None)["disabled"], true);
    assert_eq!(sign_in(&running.url, ("mobile", &new_secret), "bob", "second pw").1["code"], "CMN_90004");
    assert_eq!(cli.json(&["client", "enable", "mobile"], None)["disabled"], false);
    // Failures: non-zero exit, one line.
    let missing = cli.fails(&["user", "show", "--institution", "00516", "nobody"], None);
    assert!(missing.contains("does not exist"), "{missing}");
    let no_password = cli.fails(&["user", "set-password", "--institution", "00516", "bob"], None);
    assert!(no_password.contains("--password-stdin"), "{no_password}");
    cli.fails(&["client", "rotate-secret", "ghost"], None);
    cli.fails(&["institution", "create", "12a", "--name", "Bad"], None);
    // Human-readable output by default.
    let text = cli.run(&["client", "show", "mobile"], None);
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("client mobile"));
    // First-party apps (SPEC 3.4): set at creation or later, shown by show and --json.
    assert_eq!(cli.json(&["client", "show", "mobile"], None)["authorize_partners"], false);
    let create =
        ["client", "create", "--client-id", "web", "--institution", "00516", "--grant-type", "client_credentials"];
    let web = cli.json(&[&create[..], &["--authorize-partners"]].concat(), None);
    assert_eq!(web["authorize_partners"], true);
    let text = String::from_utf8_lossy(&cli.run(&["client", "show", "web"], None).stdout).into_owned();
    assert!(text.contains("first-party (authorizes partners)"), "{text}");
    assert_eq!(cli.json(&["client", "authorize-partners", "web", "--off"], None)["authorize_partners"], false);
    assert_eq!(cli.json(&["client", "authorize-partners", "mobile"], None)["authorize_partners"], true);
    cli.fails(&["client", "authorize-partners", "ghost"], None);
}
