//! What the server writes on disk is its user's alone — the data folder, the folders of
//! local images and the images (0700, 0600), the SQLite file and its folder wherever they
//! are — whatever the umask it is started under.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};
use support::ServerProcess;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_private_whatever_the_umask() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let database = parent.path().join("elsewhere").join("nb.db");
    let server = ServerProcess::start_with_umask(0o000, |command| {
        command
            .env("NB_DATA_DIR", &data)
            .env("DATABASE_URL", format!("sqlite://{}", database.display()))
            .env("JWT_SECRET", "a secret of at least thirty-two bytes, set")
            .env("NB_BCRYPT_COST", "4");
    })
    .await;
    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{}/v1/auth/register", server.base))
        .json(&json!({"email": "ada@example.com", "password": "long enough"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap();
    let created: Value = client
        .post(format!("{}/v1/keys", server.base))
        .bearer_auth(token)
        .json(&json!({"name": "test", "mode": "test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generated = client
        .post(format!("{}/v1/generate", server.base))
        .bearer_auth(created["key"].as_str().unwrap())
        .json(&json!({"prompt": "a banana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(generated.status(), 200);
    let url: Value = generated.json().await.unwrap();
    let path = url["url"]
        .as_str()
        .unwrap()
        .split("/images/")
        .nth(1)
        .unwrap();
    let image = data.join("images").join(path);
    assert_eq!(mode(&image), 0o600, "{}", image.display());
    let mut folder = image.parent().unwrap();
    loop {
        assert_eq!(mode(folder), 0o700, "{}", folder.display());
        if folder == data {
            break;
        }
        folder = folder.parent().unwrap();
    }
    assert_eq!(mode(&database), 0o600);
    assert_eq!(mode(database.parent().unwrap()), 0o700);
}
