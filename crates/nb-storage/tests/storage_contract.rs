//! The `ObjectStorage` contract, run against every adapter: S3 against a real S3 protocol
//! server (s3s-fs, with SigV4 signature checking) on loopback, local disk, and inline.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use nb_domain::generation::{GeneratedImage, GenerationId, ObjectKey, SpooledImage, StorageError};
use nb_domain::ports::ObjectStorage;
use nb_storage::{InlineStorage, LocalStorage, S3Secret, S3Settings, S3Storage};

const ACCESS_KEY: &str = "nb-test-access";
const SECRET_KEY: &str = "nb-test-secret-key-0123456789";
const BUCKET: &str = "images-bucket";

fn png(size: usize) -> GeneratedImage {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..size).map(|i| (i % 251) as u8));
    GeneratedImage::from_bytes(Bytes::from(bytes)).unwrap()
}

fn jpeg() -> GeneratedImage {
    GeneratedImage::from_bytes(Bytes::from_static(&[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3])).unwrap()
}

fn key_for(image: &GeneratedImage) -> ObjectKey {
    ObjectKey::for_generation(
        GenerationId(uuid::Uuid::now_v7()),
        time::OffsetDateTime::now_utc(),
        image.format(),
    )
}

struct S3TestServer {
    endpoint: String,
    server: nb_storage::testing::S3TestServer,
}

impl S3TestServer {
    async fn start() -> Self {
        let server =
            nb_storage::testing::S3TestServer::start(ACCESS_KEY, SECRET_KEY, &[BUCKET]).await;
        Self {
            endpoint: server.endpoint.clone(),
            server,
        }
    }

    fn settings(&self, secret: &str, public_url: Option<&str>) -> S3Settings {
        S3Settings {
            account_id: None,
            endpoint: Some(self.endpoint.clone()),
            region: "auto".into(),
            access_key: ACCESS_KEY.into(),
            secret_key: S3Secret::new(secret.into()),
            bucket: BUCKET.into(),
            public_url: public_url.map(str::to_owned),
            presign_expiry: Duration::from_secs(600),
            request_timeout: Duration::from_secs(10),
        }
    }

    fn stored_bytes(&self, key: &ObjectKey) -> Vec<u8> {
        std::fs::read(self.server.root().join(BUCKET).join(key.as_str())).unwrap()
    }
}

async fn fetch(url: &str) -> (Vec<u8>, String) {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.bytes().await.unwrap().to_vec(), content_type)
}

/// Test images with the content type their bytes really are, written out by hand (never
/// derived by the code under test).
fn images_and_their_types() -> [(GeneratedImage, &'static str); 2] {
    [(png(1_500_000), "image/png"), (jpeg(), "image/jpeg")]
}

/// What every adapter must do: store the bytes as given, under the key, with the image's own
/// content type, and answer with a URL that gives them back; `fetch` gives back the same
/// bytes and the content type the adapter really keeps.
async fn stores_and_serves_the_exact_bytes(
    storage: &dyn ObjectStorage,
    read_back: impl AsyncFn(&ObjectKey, &str) -> (Vec<u8>, String),
) {
    for (image, content_type) in images_and_their_types() {
        let key = key_for(&image);
        let stored = storage.put(&key, &image).await.unwrap();
        let (bytes, served_type) = read_back(&key, &stored.url).await;
        assert_eq!(bytes, image.bytes().as_ref());
        assert_eq!(served_type, content_type);
    }
}

/// `fetch` on adapters that keep what they store.
async fn fetch_gives_back_what_was_put(storage: &dyn ObjectStorage) {
    for (image, content_type) in images_and_their_types() {
        let key = key_for(&image);
        storage.put(&key, &image).await.unwrap();
        let fetched = storage
            .fetch(&key)
            .await
            .unwrap()
            .expect("stored image not found");
        assert_eq!(fetched.bytes, image.bytes());
        assert_eq!(fetched.content_type, content_type);
    }
    let never_stored = key_for(&jpeg());
    assert_eq!(storage.fetch(&never_stored).await.unwrap(), None);
}

/// `list`, `url` and `delete` on adapters that keep what they store: what is listed is what
/// was put under the prefix (no other day's), a deleted image is gone (and deleting again
/// is fine), and the URL of a stored image serves it.
async fn listing_and_deleting(storage: &dyn ObjectStorage, serves: bool) {
    let today = time::OffsetDateTime::now_utc();
    let image = png(64);
    let key = key_for(&image);
    let yesterday = ObjectKey::for_generation(
        GenerationId(uuid::Uuid::now_v7()),
        today - Duration::from_secs(86_400),
        image.format(),
    );
    storage.put(&key, &image).await.unwrap();
    storage.put(&yesterday, &image).await.unwrap();
    let prefix = nb_domain::generation::day_prefix(today.date());
    let listed = storage.list(&prefix).await.unwrap();
    let listed_keys: Vec<&ObjectKey> = listed.iter().map(|object| &object.key).collect();
    assert!(listed_keys.contains(&&key), "{listed_keys:?}");
    assert!(!listed_keys.contains(&&yesterday), "{listed_keys:?}");
    let ours = listed.iter().find(|object| object.key == key).unwrap();
    assert!((ours.last_modified - today).abs() < time::Duration::minutes(5));
    assert_eq!(
        storage.list("images/1999/01/01/").await.unwrap(),
        Vec::new()
    );
    // Keys in "folders" under the prefix are listed too (inputs kept per generation).
    let owner = GenerationId(uuid::Uuid::now_v7());
    let input = ObjectKey::for_input(owner, today, 0, image.format());
    storage.put(&input, &image).await.unwrap();
    let inputs = storage
        .list(&nb_domain::generation::input_day_prefix(today.date()))
        .await
        .unwrap();
    assert!(
        inputs.iter().any(|object| object.key == input),
        "{inputs:?}"
    );
    assert_eq!(input.input_owner(), Some(owner));
    storage.delete(&input).await.unwrap();
    if serves {
        let url = storage.url(&key).await.unwrap().unwrap();
        assert_eq!(fetch(&url).await.0, image.bytes().to_vec());
    }
    storage.delete(&key).await.unwrap();
    assert_eq!(storage.fetch(&key).await.unwrap(), None);
    storage.delete(&key).await.unwrap();
    let after: Vec<ObjectKey> = storage
        .list(&prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|object| object.key)
        .collect();
    assert!(!after.contains(&key));
    assert!(storage.fetch(&yesterday).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_with_presigned_urls() {
    let server = S3TestServer::start().await;
    let storage = S3Storage::new(server.settings(SECRET_KEY, None)).unwrap();
    stores_and_serves_the_exact_bytes(&storage, async |_, url: &str| {
        assert!(
            url.contains("X-Amz-Signature=") && url.contains("X-Amz-Expires=600"),
            "{url}"
        );
        fetch(url).await
    })
    .await;
    let stored = storage.put(&key_for(&jpeg()), &jpeg()).await.unwrap();
    assert!(!stored.url_is_lasting);
    fetch_gives_back_what_was_put(&storage).await;
    listing_and_deleting(&storage, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_with_a_public_url() {
    let server = S3TestServer::start().await;
    let storage =
        S3Storage::new(server.settings(SECRET_KEY, Some("https://img.example.com/"))).unwrap();
    let reader = S3Storage::new(server.settings(SECRET_KEY, None)).unwrap();
    stores_and_serves_the_exact_bytes(&storage, async |key: &ObjectKey, url: &str| {
        assert_eq!(url, format!("https://img.example.com/{}", key.as_str()));
        // The public domain is a CDN in front of the bucket: read what the bucket holds, and
        // the content type it keeps (what the CDN would serve).
        let object = reader.fetch(key).await.unwrap().unwrap();
        assert_eq!(object.bytes, server.stored_bytes(key));
        (server.stored_bytes(key), object.content_type)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_with_a_wrong_secret_fails_and_stores_nothing() {
    let server = S3TestServer::start().await;
    let storage = S3Storage::new(server.settings("not-the-secret", None)).unwrap();
    let key = key_for(&jpeg());
    let error = storage.put(&key, &jpeg()).await.unwrap_err();
    // Refused credentials are not a passing outage: retrying will not help.
    assert!(matches!(error, StorageError::Failed(_)), "{error:?}");
    assert!(
        !server
            .server
            .root()
            .join(BUCKET)
            .join(key.as_str())
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_secrets_never_show_in_debug_output() {
    let server = S3TestServer::start().await;
    let settings = server.settings(SECRET_KEY, None);
    assert!(!format!("{settings:?}").contains(SECRET_KEY));
    assert!(!format!("{:?}", S3Storage::new(settings).unwrap()).contains(SECRET_KEY));
}

#[test]
fn s3_needs_an_endpoint_and_a_sane_expiry() {
    let mut settings = S3Settings {
        account_id: None,
        endpoint: None,
        region: "auto".into(),
        access_key: "a".into(),
        secret_key: S3Secret::new("b".into()),
        bucket: "c".into(),
        public_url: None,
        presign_expiry: Duration::from_secs(3600),
        request_timeout: Duration::from_secs(10),
    };
    assert!(S3Storage::new(settings.clone()).is_err());
    settings.account_id = Some("0123456789abcdef".into());
    assert!(S3Storage::new(settings.clone()).is_ok());
    settings.presign_expiry = Duration::from_secs(8 * 24 * 3600);
    assert!(S3Storage::new(settings).is_err());
}

#[tokio::test]
async fn local_disk() {
    let folder = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(folder.path(), "http://127.0.0.1:8000/");
    let root = folder.path().to_owned();
    stores_and_serves_the_exact_bytes(&storage, async |key: &ObjectKey, url: &str| {
        assert_eq!(url, format!("http://127.0.0.1:8000/{}", key.as_str()));
        assert!(key.as_str().starts_with("images/"));
        // The server serves local images through `fetch`: its content type is what is served.
        let fetched = storage.fetch(key).await.unwrap().unwrap();
        assert_eq!(
            fetched.bytes,
            std::fs::read(root.join(key.as_str())).unwrap()
        );
        (fetched.bytes.to_vec(), fetched.content_type)
    })
    .await;
    fetch_gives_back_what_was_put(&storage).await;
    // Served by the app itself at its URL (not running here): the URL is checked above.
    listing_and_deleting(&storage, false).await;
    let key = key_for(&jpeg());
    assert_eq!(
        storage.url(&key).await.unwrap(),
        Some(format!("http://127.0.0.1:8000/{}", key.as_str()))
    );
    // No temporary files are left beside the images.
    let day_folder = folder
        .path()
        .join(key_for(&jpeg()).as_str())
        .parent()
        .unwrap()
        .to_owned();
    let leftovers = std::fs::read_dir(day_folder).unwrap().filter(|entry| {
        entry
            .as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    });
    assert_eq!(leftovers.count(), 0);
}

/// The folders local storage makes (the data folder included) are its user's alone, and so
/// are the images (0700 and 0600).
#[cfg(unix)]
#[tokio::test]
async fn local_images_and_their_folders_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let storage = LocalStorage::new(&data, "http://127.0.0.1:8000/");
    let image = jpeg();
    let key = key_for(&image);
    storage.put(&key, &image).await.unwrap();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let file = data.join(key.as_str());
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    let mut folder = file.parent().unwrap();
    loop {
        assert_eq!(mode(folder), 0o700, "{}", folder.display());
        if folder == data {
            break;
        }
        folder = folder.parent().unwrap();
    }
}

#[tokio::test]
async fn local_disk_serves_only_real_images() {
    let folder = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(folder.path(), "http://127.0.0.1:8000/");
    // A planted HTML file under an image's name is not an image, and is not served.
    let key = key_for(&jpeg());
    let path = folder.path().join(key.as_str());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "<html><script>alert(1)</script></html>").unwrap();
    assert_eq!(storage.fetch(&key).await.unwrap(), None);
}

#[tokio::test]
async fn inline_data_urls() {
    stores_and_serves_the_exact_bytes(&InlineStorage, async |_, url: &str| {
        let (header, data) = url.split_once(',').unwrap();
        let mime = header
            .strip_prefix("data:")
            .unwrap()
            .strip_suffix(";base64")
            .unwrap();
        (
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap(),
            mime.to_owned(),
        )
    })
    .await;
    assert_eq!(InlineStorage.fetch(&key_for(&jpeg())).await.unwrap(), None);
}

#[tokio::test]
async fn inline_keeps_nothing_to_list_locate_or_delete() {
    let key = key_for(&jpeg());
    InlineStorage.put(&key, &jpeg()).await.unwrap();
    assert_eq!(InlineStorage.url(&key).await.unwrap(), None);
    assert_eq!(InlineStorage.list("images/").await.unwrap(), Vec::new());
    InlineStorage.delete(&key).await.unwrap();
}

/// A store that fails on purpose: each fault is `Unavailable` (a 503 for clients), nothing is
/// stored, and the adapter works again as soon as the store does, without being rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outages_are_unavailable_and_the_adapter_recovers() {
    use nb_storage::testing::StoreFault;
    let server = S3TestServer::start().await;
    let mut settings = server.settings(SECRET_KEY, None);
    settings.request_timeout = Duration::from_millis(500);
    let storage = S3Storage::new(settings).unwrap();
    let image = png(4096);
    storage.put(&key_for(&image), &image).await.unwrap();
    for fault in [
        StoreFault::Status(503),
        StoreFault::Status(500),
        StoreFault::CloseConnections,
        StoreFault::Hang,
    ] {
        server.server.set_fault(fault);
        let key = key_for(&image);
        let asked = std::time::Instant::now();
        let error = storage.put(&key, &image).await.unwrap_err();
        assert!(
            matches!(error, StorageError::Unavailable(_)),
            "{fault:?}: {error:?}"
        );
        // Two attempts (rust-s3 retries once, a second apart), each within the timeout.
        assert!(asked.elapsed() < Duration::from_secs(5), "{fault:?}");
        server.server.set_fault(StoreFault::None);
        assert!(
            !server
                .server
                .root()
                .join(BUCKET)
                .join(key.as_str())
                .exists(),
            "{fault:?} left an object"
        );
        // Recovered, on the same adapter.
        let key = key_for(&image);
        storage.put(&key, &image).await.unwrap();
        assert_eq!(server.stored_bytes(&key), image.bytes().to_vec());
    }
}

/// Every file the store holds, its buckets' objects and its uploads' parts alike.
fn files_under(folder: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}

/// A 4K-sized image goes up in parts, each checked by its CRC-32, and comes back byte for byte;
/// a store that fails on the second part leaves nothing: no object under the key, and no part
/// or upload (the upload is aborted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_large_images_go_up_in_parts_and_a_failed_part_leaves_nothing() {
    use nb_storage::testing::StoreFault;
    let server = S3TestServer::start().await;
    let storage = S3Storage::new(server.settings(SECRET_KEY, None)).unwrap();
    let large = png(20 * 1024 * 1024);
    let key = key_for(&large);
    let stored = storage.put(&key, &large).await.unwrap();
    assert_eq!(server.stored_bytes(&key), large.bytes().to_vec());
    let (served, content_type) = fetch(&stored.url).await;
    assert_eq!(served, large.bytes().to_vec());
    assert_eq!(content_type, "image/png");
    let before = files_under(&server.server.root());

    server.server.set_fault(StoreFault::FailPartsFrom(2));
    let failed = key_for(&large);
    let error = storage.put(&failed, &large).await.unwrap_err();
    assert!(matches!(error, StorageError::Unavailable(_)), "{error:?}");
    // The same from a spooled file.
    let spool = tempfile::tempdir().unwrap();
    let error = storage
        .put_spooled(&failed, &spooled_in(spool.path(), &large))
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::Unavailable(_)), "{error:?}");
    server.server.set_fault(StoreFault::None);
    assert_eq!(
        files_under(&server.server.root()),
        before,
        "the failed upload left files behind"
    );
    // The same adapter works again.
    storage.put(&failed, &large).await.unwrap();
    assert_eq!(server.stored_bytes(&failed), large.bytes().to_vec());
}

/// A full disk is `Full` (507 for clients), and leaves no partial file. Needs a small
/// tmpfs, which the test mounts: it needs root (CI runs as root), and fails saying so
/// where it cannot mount one.
#[tokio::test]
async fn local_disk_full_is_full_and_leaves_no_partial_file() {
    let disk = nb_testkit::small_disk::SmallDisk::mount(1024 * 1024)
        .expect("cannot mount a tmpfs: this test needs root (CI runs as root)");
    let storage = LocalStorage::new(disk.path(), "http://localhost");
    let small = png(100 * 1024);
    storage.put(&key_for(&small), &small).await.unwrap();
    let large = png(2 * 1024 * 1024);
    let key = key_for(&large);
    let error = storage.put(&key, &large).await.unwrap_err();
    assert!(matches!(error, StorageError::Full(_)), "{error:?}");
    // Nothing under the key, and no temporary file left beside it.
    let folder = disk.path().join(key.as_str()).parent().unwrap().to_owned();
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.retain(|name| !key_for_name(name, &small));
    assert!(names.is_empty(), "left behind: {names:?}");
    // Room again: it works.
    let fits = png(200 * 1024);
    storage.put(&key_for(&fits), &fits).await.unwrap();
}

fn key_for_name(name: &str, _image: &GeneratedImage) -> bool {
    // The first, small image is the only file that should be there.
    name.ends_with(".png") && !name.starts_with('.')
}

/// A tmpfs of a given size, unmounted when dropped.
/// A spooled file, as the provider leaves one: removed when dropped.
#[derive(Debug)]
struct TestSpool(tempfile::TempPath);

#[async_trait::async_trait]
impl nb_domain::generation::SpoolFile for TestSpool {
    fn path(&self) -> &std::path::Path {
        &self.0
    }

    async fn read(&self) -> std::io::Result<bytes::Bytes> {
        tokio::fs::read(&self.0).await.map(bytes::Bytes::from)
    }
}

/// `image` spooled to a new file in `folder`.
fn spooled_in(folder: &std::path::Path, image: &GeneratedImage) -> SpooledImage {
    use std::io::Write as _;
    let mut file = tempfile::NamedTempFile::new_in(folder).unwrap();
    file.write_all(image.bytes()).unwrap();
    let bytes = image.bytes();
    SpooledImage::new(
        bytes.slice(..bytes.len().min(64 * 1024)),
        bytes.len() as u64,
        std::sync::Arc::new(TestSpool(file.into_temp_path())),
    )
    .unwrap()
}

/// Every adapter stores a spooled image byte for byte, with its content type, and leaves the
/// spooled file to its owner.
async fn stores_spooled_images(
    storage: &dyn ObjectStorage,
    spool: &std::path::Path,
    read_back: impl AsyncFn(&ObjectKey, &str) -> (Vec<u8>, String),
) {
    for (image, content_type) in [
        (png(2 * 1024 * 1024), "image/png"),
        (png(20 * 1024 * 1024), "image/png"),
        (jpeg(), "image/jpeg"),
    ] {
        let spooled = spooled_in(spool, &image);
        let key = key_for(&image);
        let stored = storage.put_spooled(&key, &spooled).await.unwrap();
        let (bytes, served_type) = read_back(&key, &stored.url).await;
        assert!(bytes == image.bytes().as_ref(), "the stored bytes differ");
        assert_eq!(served_type, content_type);
        assert!(spooled.file().path().exists(), "the spooled file was taken");
    }
}

#[tokio::test]
async fn local_disk_links_spooled_images_into_place_or_copies_them() {
    let folder = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(folder.path(), "http://127.0.0.1:8000/");
    let read_back = async |key: &ObjectKey, _: &str| {
        let fetched = storage.fetch(key).await.unwrap().unwrap();
        (fetched.bytes.to_vec(), fetched.content_type)
    };
    // On the same file system (the server spools into the data folder): linked.
    let spool = folder.path().join(".spool");
    std::fs::create_dir(&spool).unwrap();
    stores_spooled_images(&storage, &spool, read_back).await;
    // Elsewhere (a tmpfs, when there is one): copied.
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        let elsewhere = tempfile::tempdir_in(shm).unwrap();
        stores_spooled_images(&storage, elsewhere.path(), read_back).await;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let image = png(4096);
        let key = key_for(&image);
        storage
            .put_spooled(&key, &spooled_in(&spool, &image))
            .await
            .unwrap();
        let mode = std::fs::metadata(folder.path().join(key.as_str()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_uploads_spooled_images_from_their_file() {
    let server = S3TestServer::start().await;
    let storage = S3Storage::new(server.settings(SECRET_KEY, None)).unwrap();
    let spool = tempfile::tempdir().unwrap();
    stores_spooled_images(
        &storage,
        spool.path(),
        async |key: &ObjectKey, url: &str| {
            let (served, content_type) = fetch(url).await;
            assert_eq!(served, server.stored_bytes(key));
            (served, content_type)
        },
    )
    .await;
}

#[tokio::test]
async fn inline_reads_spooled_images() {
    let spool = tempfile::tempdir().unwrap();
    stores_spooled_images(
        &InlineStorage,
        spool.path(),
        async |_: &ObjectKey, url: &str| {
            let (mime, data) = url
                .strip_prefix("data:")
                .unwrap()
                .split_once(";base64,")
                .unwrap();
            (
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap(),
                mime.to_owned(),
            )
        },
    )
    .await;
}
