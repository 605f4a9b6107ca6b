//! For tests: a generated section of a documentation page — the text between
//! `<!-- NAME:start -->` and `<!-- NAME:end -->` — held equal to what the code renders.
//!
//! On a mismatch the test fails and prints the fresh section; with `PAYRULES_UPDATE_DOCS=1`
//! it writes the fresh section into the page instead (then review the diff and commit it).

use std::path::Path;

/// Checks that `page` (a path from the crate root, e.g. `docs/configuration.md`) holds
/// `fresh` as its `name` section, or rewrites it when `PAYRULES_UPDATE_DOCS=1`.
///
/// # Panics
/// The page or its markers are missing, or the section differs (and no update was asked).
pub(crate) fn assert_section(page: &str, name: &str, fresh: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(page);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
    let (start, end) = (
        format!("<!-- {name}:start -->\n"),
        format!("<!-- {name}:end -->"),
    );
    let from = text
        .find(&start)
        .unwrap_or_else(|| panic!("{page} has no `{}` marker", start.trim_end()))
        + start.len();
    let to = from
        + text[from..]
            .find(&end)
            .unwrap_or_else(|| panic!("{page} has no `{end}` marker after the start"));
    if text[from..to] == *fresh {
        return;
    }
    if std::env::var("PAYRULES_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        let updated = format!("{}{fresh}{}", &text[..from], &text[to..]);
        std::fs::write(&path, updated).unwrap_or_else(|e| panic!("{page}: {e}"));
        eprintln!("{page}: rewrote the {name} section");
        return;
    }
    panic!(
        "{page}'s {name} section is not the one the code renders. Run the test again with \
         PAYRULES_UPDATE_DOCS=1 to rewrite it, or paste this between the markers:\n\n{fresh}"
    );
}
