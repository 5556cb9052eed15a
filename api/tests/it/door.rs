//! The door against real MariaDB and Redis: user tokens (HS256, RS256,
//! ES256) and who may look a request up, the start-up settings, the rate
//! limits per user and per IP (`X-Forwarded-For` only from a trusted proxy),
//! and the order of the answers. The door is the same in both queue modes,
//! so these run in Redis mode.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{ApiConfig, Application};
use common::domain::{CouponId, QueueType};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{json, Value};
use testkit::{TestApp, TokenIssuer};

use crate::TOKEN;

/// An api in Redis mode with its own services, its configuration changed
/// by `configure`.
async fn spawn_door(configure: impl FnOnce(&mut ApiConfig)) -> TestApp {
    let (db, common) = testkit::test_config(QueueType::Redis).await;
    let mut config = testkit::api_config(common, TOKEN);
    configure(&mut config);
    testkit::spawn_api(db, config).await
}

/// Status and error code of an answer (`None`: not an error).
async fn answer(res: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    let code = body["error"]["code"].as_str().map(String::from);
    (status, code, body)
}

/// `GET /api/coupons/issue-requests/{id}` with this bearer token, if any.
async fn lookup(app: &TestApp, id: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .get(format!("{}/api/coupons/issue-requests/{id}", app.address));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// The users whose requests wait in the coupon's queue, in order.
async fn queued_users(app: &TestApp, coupon: CouponId) -> Vec<i64> {
    let events = app.queued_events(coupon).await;
    events.iter().map(|e| e.user_id.get()).collect()
}

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[rstest]
#[case::hs256(Algorithm::HS256)]
#[case::rs256(Algorithm::RS256)]
#[case::es256(Algorithm::ES256)]
#[tokio::test]
async fn a_user_token_names_the_user_and_only_its_owner_may_look_a_request_up(
    #[case] algorithm: Algorithm,
) {
    let tokens = TokenIssuer::new(algorithm);
    let app = spawn_door(|c| tokens.configure(c)).await;
    let coupon = app.create_coupon(10).await;

    // Without a token, a userId is not believed.
    for query in ["", "userId=7"] {
        let res = app.issue_request(coupon, query).send().await.unwrap();
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let (status, code, _) = answer(res).await;
        assert_eq!((status, code.as_deref()), (401, Some("UNAUTHENTICATED")));
    }
    // `sub` as a string, userId left out: the user is `sub`.
    let res = app
        .issue_request(coupon, "")
        .bearer_auth(tokens.user(7))
        .send()
        .await
        .unwrap();
    let (status, _, seven) = answer(res).await;
    assert_eq!(status, 202, "{seven}");
    assert_eq!(seven["userId"], 7);
    // `sub` as a number, and the same userId.
    let res = app
        .issue_request(coupon, "userId=8")
        .bearer_auth(tokens.token(json!(8), json!({})))
        .send()
        .await
        .unwrap();
    let (status, _, eight) = answer(res).await;
    assert_eq!((status, eight["userId"].as_i64()), (202, Some(8)));
    // Another user's id.
    let res = app
        .issue_request(coupon, "userId=10")
        .bearer_auth(tokens.user(9))
        .send()
        .await
        .unwrap();
    let (status, code, _) = answer(res).await;
    assert_eq!((status, code.as_deref()), (403, Some("USER_MISMATCH")));
    if algorithm != Algorithm::HS256 {
        // The public key used as an HS256 secret does not pass.
        let pem = std::fs::read(tokens.public_key_file.as_ref().unwrap()).unwrap();
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({ "sub": "7", "exp": testkit::unix_now() + 600 }),
            &EncodingKey::from_secret(&pem).unwrap(),
        )
        .unwrap();
        let res = app
            .issue_request(coupon, "")
            .bearer_auth(forged)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(queued_users(&app, coupon).await, [7, 8]);

    // Lookups: a token is needed, and only the owner sees the request,
    // pending and then decided; to anyone else it does not exist.
    let id = seven["requestId"].as_str().unwrap();
    let unknown = uuid::Uuid::now_v7().to_string();
    let (seven_token, eight_token) = (tokens.user(7), tokens.user(8));
    assert_eq!(lookup(&app, id, None).await.status(), 401);
    assert_eq!(lookup(&app, id, Some(&eight_token)).await.status(), 404);
    let (status, _, pending) = answer(lookup(&app, id, Some(&seven_token)).await).await;
    assert_eq!((status, pending["status"].as_str()), (202, Some("PENDING")));
    assert_eq!(
        lookup(&app, &unknown, Some(&seven_token)).await.status(),
        404
    );
    app.decide_queued(coupon).await;
    let (status, _, result) = answer(lookup(&app, id, Some(&seven_token)).await).await;
    assert_eq!((status, result["status"].as_str()), (200, Some("SUCCESS")));
    assert_eq!(result["userId"], 7);
    let (status, code, _) = answer(lookup(&app, id, Some(&eight_token)).await).await;
    assert_eq!((status, code.as_deref()), (404, Some("NOT_FOUND")));
}

#[tokio::test]
async fn tokens_that_do_not_pass_get_401_and_a_malformed_user_id_400_first() {
    let tokens = TokenIssuer::new(Algorithm::HS256);
    let app = spawn_door(|c| {
        tokens.configure(c);
        c.auth_jwt_issuer = Some("https://login.example".into());
        c.auth_jwt_audience = Some("coupons".into());
    })
    .await;
    let coupon = app.create_coupon(10).await;
    let claims = json!({ "iss": "https://login.example", "aud": "coupons" });
    let now = testkit::unix_now();
    let other_key = TokenIssuer::new(Algorithm::HS256);
    // Its header says `{"alg":"none","typ":"JWT"}`, and it has no signature.
    let unsigned = {
        let valid = tokens.token(json!("5"), claims.clone());
        let payload = valid.split('.').nth(1).unwrap().to_string();
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
    };
    let with = |extra: Value| {
        let mut c = claims.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let cases: Vec<(&str, String)> = vec![
        ("not a JWT", "not-a-jwt".into()),
        ("unsigned (alg none)", unsigned),
        (
            "signed with another key",
            other_key.token(json!("5"), claims.clone()),
        ),
        (
            "expired",
            tokens.token(json!("5"), with(json!({ "exp": now - 3600 }))),
        ),
        ("no exp", tokens.sign(&with(json!({ "sub": "5" })))),
        (
            "another issuer",
            tokens.token(json!("5"), with(json!({ "iss": "https://evil.example" }))),
        ),
        (
            "no issuer",
            tokens.token(json!("5"), json!({ "aud": "coupons" })),
        ),
        (
            "another audience",
            tokens.token(json!("5"), with(json!({ "aud": "billing" }))),
        ),
        (
            "no audience",
            tokens.token(json!("5"), json!({ "iss": "https://login.example" })),
        ),
        ("sub 0", tokens.token(json!("0"), claims.clone())),
        ("sub negative", tokens.token(json!(-5), claims.clone())),
        ("sub a name", tokens.token(json!("alice"), claims.clone())),
        ("sub a fraction", tokens.token(json!(5.5), claims.clone())),
        ("no sub", tokens.sign(&with(json!({ "exp": now + 600 })))),
    ];
    for (what, token) in cases {
        let res = app
            .issue_request(coupon, "")
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{what}"
        );
        let (status, code, body) = answer(res).await;
        assert_eq!(
            (status, code.as_deref()),
            (401, Some("UNAUTHENTICATED")),
            "{what}: {body}"
        );
    }
    let res = app
        .issue_request(coupon, "")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Malformed ids are answered before the token is looked at.
    let res = app.issue_request(coupon, "userId=x").send().await.unwrap();
    let (status, code, _) = answer(res).await;
    assert_eq!((status, code.as_deref()), (400, Some("INVALID_USER_ID")));
    // And the good one passes.
    let good = tokens.token(json!("5"), claims.clone());
    let res = app
        .issue_request(coupon, "")
        .bearer_auth(good)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(queued_users(&app, coupon).await, [5]);
}

/// The pending answer needs the owner, which only the instance that
/// accepted the request knows, or one that answered the owner's repeat
/// click with it (the repeat gate is per user); the result names it for
/// every instance.
#[tokio::test]
async fn a_pending_request_is_shown_to_its_owner_by_an_instance_that_handed_it_out() {
    let tokens = TokenIssuer::new(Algorithm::HS256);
    let (db, common) = testkit::test_config(QueueType::Redis).await;
    let config = |common| {
        let mut c = testkit::api_config(common, TOKEN);
        tokens.configure(&mut c);
        c
    };
    let first = testkit::spawn_api(db.clone(), config(common.clone())).await;
    let second = testkit::spawn_api(db, config(common)).await;
    let coupon = first.create_coupon(5).await;
    let token = tokens.user(3);
    let res = first
        .issue_request(coupon, "")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, _, accepted) = answer(res).await;
    assert_eq!(status, 202);
    let id = accepted["requestId"].as_str().unwrap();
    assert_eq!(lookup(&first, id, Some(&token)).await.status(), 202);
    assert_eq!(lookup(&second, id, Some(&token)).await.status(), 404);
    // The owner clicks again, on the second instance: the repeat names the
    // request, and from then on that instance shows it to the owner only.
    let res = second
        .issue_request(coupon, "")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, _, repeat) = answer(res).await;
    assert_eq!((status, repeat["requestId"].as_str()), (200, Some(id)));
    assert_eq!(lookup(&second, id, Some(&token)).await.status(), 202);
    assert_eq!(
        lookup(&second, id, Some(&tokens.user(4))).await.status(),
        404
    );
    first.decide_queued(coupon).await;
    let third = testkit::spawn_api(first.db.clone(), config(first.common.clone())).await;
    assert_eq!(lookup(&third, id, Some(&token)).await.status(), 200);
    assert_eq!(
        lookup(&third, id, Some(&tokens.user(4))).await.status(),
        404
    );
}

/// Log lines written to a buffer.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

#[tokio::test]
async fn without_token_settings_the_api_says_once_at_start_up_that_it_trusts_user_ids() {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(lines.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let said = || {
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|l| l.contains("WARN") && l.contains("trusts the userId"))
            .count()
    };
    let (_db, common) = testkit::test_config(QueueType::Redis).await;
    let open = Application::build(testkit::api_config(common.clone(), TOKEN))
        .await
        .unwrap();
    assert_eq!(said(), 1);
    let tokens = TokenIssuer::new(Algorithm::ES256);
    let mut config = testkit::api_config(common, TOKEN);
    tokens.configure(&mut config);
    let guarded = Application::build(config).await.unwrap();
    assert_eq!(said(), 1, "said again by an api that requires tokens");
    drop((open, guarded));
}

#[tokio::test]
async fn bad_token_settings_stop_start_up_naming_the_variable() {
    let tokens = TokenIssuer::new(Algorithm::RS256);
    let dir = tokens.public_key_file.as_ref().unwrap().parent().unwrap();
    let private = dir.join("private.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let secret = Some("s".repeat(40));
    // What is set, and the words the refusal must hold.
    type Case<'a> = (&'a str, Option<String>, Option<PathBuf>, &'a [&'a str]);
    let cases: Vec<Case<'_>> = vec![
        (
            "both",
            secret.clone(),
            tokens.public_key_file.clone(),
            &["AUTH_JWT_SECRET", "AUTH_JWT_PUBLIC_KEY_FILE"],
        ),
        (
            "short secret",
            Some("short".into()),
            None,
            &["AUTH_JWT_SECRET"],
        ),
        (
            "no such file",
            None,
            Some(dir.join("missing.pem")),
            &["AUTH_JWT_PUBLIC_KEY_FILE"],
        ),
        (
            "a private key",
            None,
            Some(private),
            &["AUTH_JWT_PUBLIC_KEY_FILE", "private"],
        ),
        (
            "not a key",
            None,
            Some(garbage),
            &["AUTH_JWT_PUBLIC_KEY_FILE"],
        ),
    ];
    for (what, secret, file, names) in cases {
        let mut config = testkit::api_config(testkit::common_config(), TOKEN);
        config.auth_jwt_secret = secret;
        config.auth_jwt_public_key_file = file;
        let err = Application::build(config).await.err().expect(what);
        let err = format!("{err:#}");
        for name in names {
            assert!(err.contains(name), "{what}: {err}");
        }
    }
}

/// `400` → `401`/`403` → `429` → `404`: a call the door refuses earlier
/// does not count against a limit, and an unknown coupon over a limit is a
/// `429`.
#[tokio::test]
async fn the_door_answers_malformed_then_unauthenticated_then_rate_limited_then_unknown() {
    let tokens = TokenIssuer::new(Algorithm::HS256);
    let app = spawn_door(|c| {
        tokens.configure(c);
        c.rate_limit_per_ip = 1;
    })
    .await;
    let coupon = app.create_coupon(10).await;
    let unknown = CouponId::try_from(424_242).unwrap();
    let send = |coupon: CouponId, query: &'static str, token: Option<String>| {
        let mut req = app.issue_request(coupon, query);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { answer(req.send().await.unwrap()).await }
    };
    for _ in 0..3 {
        let (status, code, _) = send(coupon, "userId=x", Some(tokens.user(1))).await;
        assert_eq!((status, code.as_deref()), (400, Some("INVALID_USER_ID")));
        let (status, code, _) = send(coupon, "", None).await;
        assert_eq!((status, code.as_deref()), (401, Some("UNAUTHENTICATED")));
        let (status, code, _) = send(coupon, "userId=3", Some(tokens.user(2))).await;
        assert_eq!((status, code.as_deref()), (403, Some("USER_MISMATCH")));
    }
    let (status, _, _) = send(coupon, "", Some(tokens.user(1))).await;
    assert_eq!(
        status, 202,
        "the refusals before did not use up the IP's limit"
    );
    let (status, code, _) = send(coupon, "", Some(tokens.user(2))).await;
    assert_eq!((status, code.as_deref()), (429, Some("RATE_LIMITED")));
    let (status, code, _) = send(unknown, "", Some(tokens.user(2))).await;
    assert_eq!((status, code.as_deref()), (429, Some("RATE_LIMITED")));
    let (status, code, _) = send(coupon, "", None).await;
    assert_eq!((status, code.as_deref()), (401, Some("UNAUTHENTICATED")));
    assert_eq!(queued_users(&app, coupon).await, [1]);
}

#[tokio::test]
async fn over_its_limit_a_user_gets_429_with_retry_after_and_passes_after_waiting_it() {
    let app = spawn_door(|c| c.rate_limit_per_user = 1).await;
    let coupons = [
        app.create_coupon(10).await,
        app.create_coupon(10).await,
        app.create_coupon(10).await,
    ];
    let issue =
        |coupon: CouponId, user: i64| app.issue_request(coupon, &format!("userId={user}")).send();
    assert_eq!(
        issue(coupons[0], 7).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let (b, c) = tokio::join!(issue(coupons[1], 7), issue(coupons[2], 7));
    let mut wait = 0;
    for res in [b.unwrap(), c.unwrap()] {
        let secs = retry_after(&res);
        assert!(secs >= 1, "Retry-After {secs}");
        wait = wait.max(secs);
        let (status, code, _) = answer(res).await;
        assert_eq!((status, code.as_deref()), (429, Some("RATE_LIMITED")));
    }
    // Another user is not held back.
    assert_eq!(
        issue(coupons[1], 8).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        issue(coupons[1], 7).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    // Nothing refused was queued.
    assert_eq!(queued_users(&app, coupons[0]).await, [7]);
    assert_eq!(queued_users(&app, coupons[1]).await, [8, 7]);
    assert_eq!(queued_users(&app, coupons[2]).await, Vec::<i64>::new());
}

#[tokio::test]
async fn the_ip_limit_keys_on_the_peer_and_on_x_forwarded_for_only_from_a_trusted_proxy() {
    let send = |app: &TestApp, coupon: CouponId, user: i64, forwarded: Option<&str>| {
        let mut req = app.issue_request(coupon, &format!("userId={user}"));
        if let Some(f) = forwarded {
            req = req.header("x-forwarded-for", f);
        }
        let req = req.send();
        async move { req.await.unwrap() }
    };
    // The peer (127.0.0.1) is not trusted: its header is not believed.
    let direct = spawn_door(|c| c.rate_limit_per_ip = 1).await;
    let coupon = direct.create_coupon(10).await;
    assert_eq!(
        send(&direct, coupon, 1, Some("203.0.113.1")).await.status(),
        202
    );
    let res = send(&direct, coupon, 2, Some("203.0.113.2")).await;
    assert!(retry_after(&res) >= 1);
    assert_eq!(answer(res).await.1.as_deref(), Some("RATE_LIMITED"));
    assert_eq!(queued_users(&direct, coupon).await, [1]);

    // Behind a trusted proxy, the client is the address it forwarded.
    let proxied = spawn_door(|c| {
        c.rate_limit_per_ip = 1;
        c.trusted_proxies = vec![api::limits::parse_proxy("127.0.0.0/8").unwrap()];
    })
    .await;
    let coupon = proxied.create_coupon(10).await;
    let cases = [
        (1, Some("203.0.113.1"), 202),
        (2, Some("203.0.113.1"), 429),
        // What the client wrote itself, left of its proxy's entry, is not believed.
        (3, Some("198.51.100.9, 203.0.113.1"), 429),
        // A chain of trusted proxies is walked past.
        (4, Some("203.0.113.1, 127.0.0.2"), 429),
        (5, Some("203.0.113.2"), 202),
        // Without the header the proxy itself is the client.
        (6, None, 202),
        (7, None, 429),
    ];
    for (user, forwarded, want) in cases {
        let res = send(&proxied, coupon, user, forwarded).await;
        assert_eq!(res.status().as_u16(), want, "user {user} via {forwarded:?}");
    }
    assert_eq!(queued_users(&proxied, coupon).await, [1, 5, 6]);
}
