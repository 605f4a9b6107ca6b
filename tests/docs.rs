//! The documentation holds together: every relative link and `#anchor` in the README,
//! ARCHITECTURE.md, CHANGELOG.md and `docs/` (and the READMEs that link into them) resolves,
//! with GitHub's anchor rules; the sections the code generates or the tests hold live on the
//! pages the code and tests read; and a README named by the code or the scripts exists.
//!
//! std only (no crate of payrules and no dependency), so this binary links in a moment.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pages checked, from the repository root.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = [
        "README.md",
        "ARCHITECTURE.md",
        "CHANGELOG.md",
        "deploy/kubernetes/README.md",
        "fixtures/scenarios/README.md",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .filter_map(|p| p.strip_prefix(root()).ok().map(Path::to_path_buf))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

fn read(page: &Path) -> String {
    std::fs::read_to_string(root().join(page)).unwrap_or_else(|e| panic!("{}: {e}", page.display()))
}

/// The lines of `text` outside fenced code blocks, with their numbers (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let marker = if t.starts_with("```") {
            Some("```")
        } else if t.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// `line` with inline code spans blanked out (a link inside backticks is not a link).
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// GitHub's anchor for a heading: the rendered text lowercased, every character that is not
/// a letter, a digit, a space, `-` or `_` dropped, spaces turned into `-`.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// A heading's rendered text: `[text](url)` becomes `text`; backticks and emphasis marks go
/// (the slug drops them anyway, but a link's URL must not reach the slug).
fn rendered(heading: &str) -> String {
    let mut out = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|c| open + c) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|e| close + e) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out.replace(['`', '*'], "")
}

/// Every anchor of a page: its ATX headings' slugs, numbered `-1`, `-2`, … when repeated.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(rendered(line[hashes..].trim()).trim());
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The inline links `[text](target)` of a page (images too), with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push((n, target.to_string()));
            rest = &after[end..];
        }
    }
    out
}

/// `base/rel` with `.` and `..` resolved, or `None` when it climbs out of the repository.
fn join(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut parts: Vec<Component> = base.components().collect();
    for c in Path::new(rel).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.iter().collect())
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        let dir = page.parent().unwrap_or(Path::new("")).to_path_buf();
        for (line, target) in links(&text) {
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let at = format!("{}:{line}: {target}", page.display());
            let file = if path.is_empty() {
                page.clone()
            } else {
                match join(&dir, path) {
                    Some(f) => f,
                    None => {
                        broken.push(format!("{at}: leaves the repository"));
                        continue;
                    }
                }
            };
            let full = root().join(&file);
            if !full.exists() {
                broken.push(format!("{at}: no such file {}", file.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if full.extension().is_none_or(|x| x != "md") {
                broken.push(format!("{at}: an anchor into a file that is not Markdown"));
            } else if !anchors(&read(&file)).iter().any(|a| a == anchor) {
                broken.push(format!("{at}: {} has no heading #{anchor}", file.display()));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser still finding them?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The generated and held sections live where the code and the tests read them, once.
#[test]
fn held_sections_are_on_their_pages_and_nowhere_else() {
    let held = [
        // src/telemetry/metrics.rs renders it; its test compares.
        ("docs/operating.md", "<!-- metrics-table:start -->"),
        // src/config/reference.rs renders it; src/config/tests.rs compares.
        ("docs/configuration.md", "<!-- options-table:start -->"),
        // tests/it/webhook_receivers.rs holds these excerpts to examples/receivers/.
        ("docs/webhook.md", "```python\nfrom standardwebhooks"),
        ("docs/webhook.md", "```js\nconst { Webhook }"),
    ];
    for (page, marker) in held {
        for other in pages() {
            let count = read(&other).matches(marker).count();
            let want = usize::from(other == Path::new(page));
            assert_eq!(count, want, "{marker:?} in {}", other.display());
        }
    }
}

#[test]
fn the_anchor_rules_are_githubs() {
    assert_eq!(slug("Why did payrules (not) …?"), "why-did-payrules-not-");
    assert_eq!(
        slug(&rendered("After an outage: `payrules reconcile`")),
        "after-an-outage-payrules-reconcile"
    );
    assert_eq!(
        slug("capture_on_shipment (opt-in)"),
        "capture_on_shipment-opt-in"
    );
    assert_eq!(slug("Brokers: Pub/Sub and SQS"), "brokers-pubsub-and-sqs");
    assert_eq!(
        anchors("# A\n## A\n```\n# not a heading\n```\n## A"),
        ["a", "a-1", "a-2"]
    );
    assert_eq!(
        links("see [x](a.md#b) and `[y](not-a-link)`"),
        [(1, "a.md#b".to_string())]
    );
}

/// Code, tests and scripts that name a README name one that exists (`path/README.md`); the
/// sections that used to be in the top-level README are now on pages of `docs/`.
#[test]
fn a_readme_named_outside_the_docs_exists() {
    let mut stale = Vec::new();
    let mut files = vec![root().join("Dockerfile"), root().join("Cargo.toml")];
    for dir in [
        "src", "tests", "scripts", "benches", "examples", "deploy", "fuzz", "fixtures",
    ] {
        collect(&root().join(dir), &mut files);
    }
    for file in files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".md") || name == "docs.rs" || name.ends_with(".jsonl") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("README") {
                let path: String = line[..at]
                    .chars()
                    .rev()
                    .take_while(|c| !c.is_whitespace() && !"`\"'(".contains(*c))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                let named = format!("{path}README.md");
                let exists = line[at..].starts_with("README.md") && root().join(&named).exists();
                if !exists {
                    stale.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "README named where a docs/ page is meant:\n{}",
        stale.join("\n")
    );
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let skip = p.file_name().is_some_and(|n| {
            n == "node_modules" || n == "target" || n == "corpus" || n == "artifacts"
        });
        if skip {
            continue;
        }
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// ARCHITECTURE.md's "Where is the code?" names every module under `src/` (as `path.rs`
/// relative to `src/`), and nothing that is not there.
#[test]
fn where_is_the_code_names_every_module() {
    let text = read(Path::new("ARCHITECTURE.md"));
    let start = text
        .find("## Where is the code?")
        .expect("ARCHITECTURE.md has a \"Where is the code?\" section");
    let section = &text[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut files = Vec::new();
    collect(&root().join("src"), &mut files);
    let mut modules: Vec<String> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "rs"))
        .filter_map(|f| f.strip_prefix(root().join("src")).ok())
        .map(|f| f.to_string_lossy().replace('\\', "/"))
        .collect();
    modules.sort();
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| !section.contains(&format!("- `{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in ARCHITECTURE.md's Where is the code?: {missing:?}"
    );
    let named = section.lines().filter_map(|l| {
        let l = l.trim_start().strip_prefix("- `")?;
        Some(l[..l.find('`')?].to_string())
    });
    for name in named {
        assert!(
            modules.contains(&name),
            "ARCHITECTURE.md names {name}, which is not under src/"
        );
    }
}
