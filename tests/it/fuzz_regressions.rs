//! Replays every committed fuzz input (`fuzz/regressions/<target>/*`, seeds and any input that
//! once found a bug) through the same oracle the fuzz target uses.

use std::path::Path;

use tokenledger::fuzz_checks as checks;

/// One fuzz oracle: panics when its property fails.
type Oracle = fn(&[u8]);

#[test]
fn committed_fuzz_inputs_still_pass_their_oracles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let targets: [(&str, Oracle); 6] = [
        ("basic_header", checks::basic_header),
        ("form_body", checks::form_body),
        ("scopes", checks::scopes),
        ("headers", checks::headers),
        ("token_string", checks::token_string),
        ("event_codec", checks::event_codec),
    ];
    let mut replayed = 0;
    for (target, check) in targets {
        let dir = root.join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { panic!("missing {}", dir.display()) };
        for entry in entries {
            let path = entry.unwrap().path();
            check(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed >= 12, "too few committed inputs: {replayed}");
}
