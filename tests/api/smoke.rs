//! The server starts and answers its health check.

use super::helpers::spawn_app;

#[tokio::test]
async fn health_needs_no_key_and_uses_the_envelope() {
    let app = spawn_app().await;
    let reply = app.send(app.client.get(app.url("/health"))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["success"], true);
    assert_eq!(reply.json["data"]["status"], "healthy");
    assert!(reply.headers.contains_key("x-request-id"));
}
