//! The OpenAPI document, the docs page and what schemathesis found in
//! coupon creation, against real MariaDB and Redis.

use std::collections::BTreeSet;

use crate::{links, spawn_app, TOKEN};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn the_openapi_document_lists_every_route_with_its_error_shape() {
    let app = spawn_app().await;
    let doc = app.json("/api-docs/openapi.json").await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            routes.insert(format!("{} {path}", method.to_uppercase()));
            let responses = op["responses"].as_object().unwrap();
            for (status, answer) in responses {
                if status.starts_with('4') || status == "503" && path.starts_with("/api") {
                    let schema = &answer["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let expected: BTreeSet<String> = [
        "POST /api/coupons/{couponId}/issue",
        "GET /api/coupons/issue-requests/{requestId}",
        "GET /api/coupons/{couponId}",
        "GET /api/coupons/{couponId}/queue-size",
        "POST /api/admin/coupons",
        "GET /api/admin/queue",
        "PUT /api/admin/queue",
        "GET /api/dashboard",
        "GET /dashboard",
        "GET /dashboard/dashboard.js",
        "GET /dashboard/dashboard.css",
        "GET /health",
        "GET /ready",
        "GET /metrics",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(routes, expected);
    let admin = &doc["paths"]["/api/admin/coupons"]["post"];
    assert_eq!(admin["security"][0]["adminToken"], serde_json::json!([]));
    assert_eq!(
        doc["components"]["securitySchemes"]["adminToken"]["scheme"],
        "bearer"
    );

    // It describes the answers the api really gives: the issue call's
    // statuses, and the fields of a real 202 and a real error answer.
    let issue = &doc["paths"]["/api/coupons/{couponId}/issue"]["post"]["responses"];
    assert_eq!(
        keys(issue),
        BTreeSet::from(
            ["200", "202", "400", "401", "403", "404", "409", "429", "503"].map(String::from)
        )
    );
    assert!(
        issue["429"]["headers"]["Retry-After"].is_object(),
        "{}",
        issue["429"]
    );
    let lookup = &doc["paths"]["/api/coupons/issue-requests/{requestId}"]["get"];
    assert!(lookup["responses"]["401"].is_object() && lookup["responses"]["404"].is_object());
    // User tokens are optional (the api requires them only when configured).
    let security = &doc["paths"]["/api/coupons/{couponId}/issue"]["post"]["security"];
    assert_eq!(security, &serde_json::json!([{}, { "userToken": [] }]));
    assert_eq!(
        doc["components"]["securitySchemes"]["userToken"]["bearerFormat"],
        "JWT"
    );
    assert_eq!(
        issue["202"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/IssueAccepted"
    );
    let schemas = &doc["components"]["schemas"];
    let coupon = app.create_coupon(1).await;
    let accepted: Value = app.issue(coupon.get(), "1").await.json().await.unwrap();
    assert_schema_fits(&schemas["IssueAccepted"], &accepted);
    let refused = app.issue(424_242, "1").await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let refused: Value = refused.json().await.unwrap();
    assert_schema_fits(&schemas["ErrorBody"], &refused);
    assert_schema_fits(&schemas["ErrorDetail"], &refused["error"]);
}

/// The keys of a JSON object.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// `body` has only the properties `schema` documents, and every required
/// one, not null.
fn assert_schema_fits(schema: &Value, body: &Value) {
    let documented = keys(&schema["properties"]);
    let served = keys(body);
    assert!(
        served.is_subset(&documented),
        "{body} has fields the document does not name: {schema}"
    );
    for field in schema["required"].as_array().into_iter().flatten() {
        let field = field.as_str().unwrap();
        assert!(!body[field].is_null(), "{body} lacks the required {field}");
    }
}

#[tokio::test]
async fn the_docs_page_is_served_with_its_own_assets() {
    let app = spawn_app().await;
    let html = app.text("/docs").await;
    assert!(html.contains("swagger-ui"), "{html}");
    let assets = links(&html);
    assert!(assets.len() >= 3, "{assets:?}");
    for asset in &assets {
        assert!(!asset.contains("//"), "outside asset {asset}");
        let path = format!("/docs/{}", asset.trim_start_matches("./"));
        assert!(!app.text(&path).await.is_empty(), "{path}");
    }
    let init = app.text("/docs/swagger-initializer.js").await;
    assert!(init.contains("/api-docs/openapi.json"), "{init}");
    let compact = init.replace(' ', "");
    assert!(compact.contains("\"validatorUrl\":\"none\""), "{init}");
    assert!(
        !init.contains("http://") && !init.contains("https://"),
        "{init}"
    );
    let missing = app.get("/docs/no-such-file.js").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn coupon_creation_takes_integral_floats_and_refuses_unstorable_windows() {
    let app = spawn_app().await;
    let create = |body: Value| {
        app.client
            .post(format!("{}/api/admin/coupons", app.address))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let res = create(serde_json::json!({ "name": "x", "quantity": 5.0 }))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.json::<Value>().await.unwrap()["totalQuantity"], 5);
    for (body, want) in [
        (serde_json::json!({ "name": "x", "quantity": 5.5 }), 422),
        (serde_json::json!({ "name": "x", "quantity": 1e30 }), 422),
        (
            serde_json::json!({ "name": "x", "quantity": 1, "issueStartsAt": "9999-12-31T23:59:59-01:00" }),
            400,
        ),
        (
            serde_json::json!({ "name": "x", "quantity": 1, "issueEndsAt": "0999-01-01T00:00:00Z" }),
            400,
        ),
    ] {
        let res = create(body.clone()).await.unwrap();
        assert_eq!(res.status().as_u16(), want, "{body}");
    }
}
