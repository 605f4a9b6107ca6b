#!/usr/bin/env bash
# Proves that the Dockerfile's build stage can build payrules from its build context, without a
# Docker engine:
#
#   1. reads the Dockerfile's build stage (the stage that runs `cargo build`) and its COPY/ADD
#      lines that take from the context (no --from=);
#   2. lays out exactly the files they bring in, in a fresh temporary folder, as the image's
#      filesystem would hold them: the candidates are the files a fresh clone has
#      (`git ls-files -co --exclude-standard`), filtered by .dockerignore with Docker's rules;
#   3. checks that the runtime stage's `COPY --from=<build stage>` takes the binary that the
#      build stage's `cargo build --bin payrules` produces, and not from a cache mount (which is
#      not part of the stage's filesystem);
#   4. runs the build stage's `cargo build` command in that folder, in the dev profile.
#
# Why the dev profile: the image builds --release, whose fat LTO with one codegen unit takes
# many minutes on a small machine; what this check is about — every file the build needs is in
# the context, Cargo.lock is current (--locked) — fails the same way in either profile.
#
# Fails (exit 1, with the reason) when a COPY source is missing from the context, the binary
# path does not line up, or the build fails. Run by CI (.ci/run).
#
# The target dir is the project's own (measured on the 2-core machine, after CI's
# `cargo test --all-targets` on a fresh clone: 99 s here, against 157 s in a target dir of its
# own, 20 s when that one is warm). Cargo keys a dependency's artifacts on its registry source,
# features and profile, and payrules' own on its path relative to the workspace root, so the
# copy in the temporary folder reuses them; only what `cargo test` built with the
# dev-dependencies' extra features (tokio's test-util, hyper's server, ...) and payrules itself
# are recompiled. The copy is fresh (new mtimes), so payrules is always recompiled from it, and
# target/debug/payrules is then that build of the same sources.
#
# Environment:
#   IMAGE_CONTEXT_TARGET_DIR  cargo's target dir for the build (default: $CARGO_TARGET_DIR, else
#                             <repo>/target)
#   KEEP_IMAGE_CONTEXT=1      keep the temporary folder (its path is printed)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

dockerfile="$repo/Dockerfile"
target_dir="${IMAGE_CONTEXT_TARGET_DIR:-${CARGO_TARGET_DIR:-$repo/target}}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac

work="$(mktemp -d "${TMPDIR:-/tmp}/payrules-image-context.XXXXXX")"
if [[ "${KEEP_IMAGE_CONTEXT:-}" == 1 ]]; then
  echo "check-image-context: keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi

fail() {
  echo "check-image-context: FAILED: $*" >&2
  exit 1
}

# Steps 1-3: lay out the build stage's filesystem under $work/rootfs; writes the build's working
# directory and the cargo arguments to $work/build.env.
python3 - "$repo" "$dockerfile" "$work" <<'PY' || fail "the Dockerfile's build context or binary path is not right (see above)"
import fnmatch, json, os, posixpath, re, shlex, shutil, subprocess, sys

repo, dockerfile, work = sys.argv[1:4]
rootfs = os.path.join(work, "rootfs")
errors = []

def die(msg):
    print(f"check-image-context: {msg}", file=sys.stderr)
    sys.exit(1)

# ---- .dockerignore, with the rules of moby/patternmatcher (what BuildKit uses) ---------------
def compile_pattern(pat):
    """A cleaned pattern (no leading '!' or '/') to a regex, as patternmatcher compiles it:
    `**` spans directories (`**/` included), `*` and `?` do not cross '/', `[...]` is a class."""
    rx, i = "^", 0
    while i < len(pat):
        c = pat[i]
        if c == "*":
            if pat[i + 1:i + 2] == "*":
                i += 1
                if pat[i + 1:i + 2] == "/":
                    i += 1
                rx += ".*" if i + 1 >= len(pat) else "(.*/)?"
            else:
                rx += "[^/]*"
        elif c == "?":
            rx += "[^/]"
        elif c == "\\" and i + 1 < len(pat):
            i += 1
            rx += re.escape(pat[i])
        elif c == "[":
            j = pat.find("]", i + 1)
            if j < 0:
                rx += re.escape(c)
            else:
                body = pat[i + 1:j]
                if body.startswith("^") or body.startswith("!"):
                    body = "^" + body[1:]
                rx += "[" + body.replace("\\", "\\\\") + "]"
                i = j
        else:
            rx += re.escape(c)
        i += 1
    return re.compile(rx + "$")

def read_dockerignore(path):
    patterns = []
    if not os.path.exists(path):
        return patterns
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        if not line:
            continue
        line = posixpath.normpath(line)
        if len(line) > 1 and line.startswith("/"):
            line = line.lstrip("/")
        patterns.append((exclusion, compile_pattern(line)))
    return patterns

def ignored(path, patterns):
    """MatchesOrParentMatches: the last pattern that matches the path, or one of its parent
    directories, decides."""
    parts = path.split("/")
    parents = ["/".join(parts[:i + 1]) for i in range(len(parts) - 1)]
    matched = False
    for exclusion, rx in patterns:
        if exclusion != matched:
            continue
        if rx.match(path) or any(rx.match(p) for p in parents):
            matched = not exclusion
    return matched

patterns = read_dockerignore(os.path.join(repo, ".dockerignore"))

# ---- the candidate files: what a fresh clone has ----------------------------------------------
try:
    out = subprocess.run(["git", "-C", repo, "ls-files", "-z", "-co", "--exclude-standard"],
                         check=True, capture_output=True).stdout.decode()
    candidates = sorted({p for p in out.split("\0") if p})
    origin = "git ls-files -co --exclude-standard"
except (OSError, subprocess.CalledProcessError):
    candidates = []
    for d, dirs, files in os.walk(repo):
        rel = os.path.relpath(d, repo)
        rel = "" if rel == "." else rel + "/"
        dirs[:] = [x for x in dirs if x != ".git"]
        candidates += [rel + f for f in files]
    origin = "the file system (not a git checkout)"
# Listed but deleted in the working tree, or a submodule: not in the context.
candidates = [p for p in candidates if os.path.islink(os.path.join(repo, p))
              or os.path.isfile(os.path.join(repo, p))]
context = [p for p in candidates if not ignored(p, patterns)]
context_dirs = {posixpath.dirname(p) for p in context}
for d in list(context_dirs):
    while d:
        d = posixpath.dirname(d)
        context_dirs.add(d)
print(f"check-image-context: context: {len(context)} of {len(candidates)} files from {origin} "
      f"pass .dockerignore")

# ---- the Dockerfile ----------------------------------------------------------------------------
def instructions(path):
    """(keyword, rest) for each instruction; comments dropped, continuation lines joined."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out, cur = [], ""
    for line in lines:
        if line.lstrip().startswith("#"):
            continue  # also inside a continuation, as Docker does
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        if cur.strip():
            kw, _, rest = cur.strip().partition(" ")
            out.append((kw.upper(), rest.strip()))
        cur = ""
    if cur.strip():
        kw, _, rest = cur.strip().partition(" ")
        out.append((kw.upper(), rest.strip()))
    return out

def split_flags(rest):
    """`--flag=value ... args`: (flags, args); args in JSON (exec) form or shell words."""
    flags, n = {}, 0
    words = rest.split()
    while n < len(words) and words[n].startswith("--"):
        k, _, v = words[n][2:].partition("=")
        flags.setdefault(k, []).append(v)
        n += 1
    tail = rest.split(None, n)[-1] if n else rest
    return flags, tail

def arg_list(tail):
    tail = tail.strip()
    if tail.startswith("["):
        try:
            return json.loads(tail)
        except ValueError:
            pass
    return shlex.split(tail)

stages = []
for kw, rest in instructions(dockerfile):
    if kw == "FROM":
        words = rest.split()
        words = [w for w in words if not w.startswith("--")]
        name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
        stages.append({"name": name, "base": words[0], "steps": []})
    elif stages:
        stages[-1]["steps"].append((kw, rest))
if len(stages) < 2:
    die("expected a multi-stage Dockerfile (a build stage and a runtime stage)")

def stage_by_ref(ref):
    for i, s in enumerate(stages):
        if s["name"] == ref or str(i) == ref:
            return s
    return None

def cargo_build(stage):
    for kw, rest in stage["steps"]:
        if kw == "RUN":
            m = re.search(r"\bcargo\s+build\b", rest)
            if m:
                return rest, m
    return None, None

build = next((s for s in stages if cargo_build(s)[0]), None)
if build is None:
    die("no stage of the Dockerfile runs `cargo build`")
final = stages[-1]

# ---- lay out the build stage's COPY lines ----------------------------------------------------
def glob_match(pattern, path):
    """Go's filepath.Match, as COPY uses it: segment by segment, `*` does not cross '/'."""
    pp, sp = pattern.split("/"), path.split("/")
    return len(pp) == len(sp) and all(fnmatch.fnmatchcase(s, p) for p, s in zip(pp, sp))

def put(rel, dest):
    src = os.path.join(repo, rel)
    dst = os.path.join(rootfs, dest.lstrip("/"))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    else:
        shutil.copyfile(src, dst)  # a new mtime: cargo recompiles payrules from these files
        shutil.copymode(src, dst)

workdir, crate_dir, copied = "/", None, 0
cache_mounts, env = [], {}
for kw, rest in build["steps"]:
    if kw == "WORKDIR":
        workdir = posixpath.normpath(posixpath.join(workdir, rest.strip()))
    elif kw == "ENV":
        for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', rest):
            env[k] = v.strip('"')
    elif kw in ("COPY", "ADD"):
        flags, tail = split_flags(rest)
        if "from" in flags:
            continue
        args = arg_list(tail)
        if len(args) < 2:
            die(f"cannot parse `{kw} {rest}`")
        sources, dest = args[:-1], args[-1]
        if any("$" in a for a in args):
            die(f"`{kw} {rest}`: variables in COPY paths are not supported by this check")
        dest_is_dir = dest.endswith("/") or len(sources) > 1 or dest in (".", "./")
        dest = posixpath.normpath(posixpath.join(workdir, dest))
        for source in sources:
            if re.match(r"^[a-z]+://", source):
                die(f"`{kw} {source}`: URLs are not supported by this check")
            norm = posixpath.normpath(source.lstrip("/")) if source.strip("/") else "."
            if any(c in norm for c in "*?["):
                hits = sorted({p for p in list(context) + list(context_dirs)
                               if p and glob_match(norm, p)})
            else:
                hits = [norm] if norm == "." or norm in context or norm in context_dirs else []
            files = []
            for hit in hits:
                if hit in context:  # a file: to dest, or into dest if dest is a directory
                    is_dir = dest_is_dir or len(hits) > 1
                    files.append((hit, posixpath.join(dest, posixpath.basename(hit))
                                  if is_dir else dest))
                else:  # a directory: its contents go into dest
                    prefix = "" if hit == "." else hit + "/"
                    files += [(p, posixpath.join(dest, p[len(prefix):]))
                              for p in context if p.startswith(prefix)]
            if not files:
                errors.append(f"`{kw} {source} ...`: {source!r} is not in the build context "
                              f"(missing from git, or excluded by .dockerignore)")
                continue
            for rel, dst in files:
                put(rel, dst)
            copied += len(files)
            print(f"check-image-context: {kw} {source} -> {dest}: {len(files)} files")
    elif kw == "RUN" and re.search(r"\bcargo\s+build\b", rest):
        crate_dir = workdir
        flags, _ = split_flags(rest)
        for m in flags.get("mount", []):
            opts = dict(kv.partition("=")[::2] for kv in m.split(","))
            if opts.get("type") == "cache":
                t = opts.get("target") or opts.get("dst") or opts.get("destination")
                cache_mounts.append(posixpath.normpath(posixpath.join(workdir, t)))
        break

# ---- the binary: cargo build --bin payrules -> COPY --from=build ---------------------------
run, m = cargo_build(build)
words = shlex.split(run[m.start():])
cargo_args = []
for w in words[2:]:
    if w in ("&&", "||", ";", "|") or w.endswith(";"):
        break
    cargo_args.append(w)
bins = [cargo_args[i + 1] for i, a in enumerate(cargo_args[:-1]) if a == "--bin"]
bins += [a.split("=", 1)[1] for a in cargo_args if a.startswith("--bin=")]
if bins != ["payrules"]:
    errors.append(f"the build stage's cargo build must build exactly `--bin payrules` "
                  f"(found {bins or 'no --bin'})")
if "--locked" not in cargo_args:
    errors.append("the build stage's cargo build must use --locked (Cargo.lock is the truth)")
profile = "debug"
if "--release" in cargo_args:
    profile = "release"
for i, a in enumerate(cargo_args):
    p = a.split("=", 1)[1] if a.startswith("--profile=") else (
        cargo_args[i + 1] if a == "--profile" and i + 1 < len(cargo_args) else None)
    if p:
        profile = "debug" if p in ("dev", "test") else ("release" if p == "bench" else p)
target_root = posixpath.normpath(posixpath.join(crate_dir, env.get("CARGO_TARGET_DIR", "target")))
artifact = posixpath.join(target_root, profile, "payrules")

def under(path, dirs):
    return any(path == d or path.startswith(d + "/") for d in dirs)

from_copies = []
for kw, rest in final["steps"]:
    if kw == "COPY":
        flags, tail = split_flags(rest)
        if "from" in flags and stage_by_ref(flags["from"][0]) is build:
            from_copies.append(arg_list(tail))
if not from_copies:
    errors.append(f"the runtime stage has no `COPY --from={build['name']}` of the binary")
for args in from_copies:
    for src in args[:-1]:
        src = posixpath.normpath(posixpath.join(crate_dir, src))
        if under(src, cache_mounts):
            errors.append(f"COPY --from={build['name']} {src}: that path is in a cache mount "
                          f"({', '.join(cache_mounts)}), which is not part of the build stage's "
                          f"filesystem; copy the binary out of it in the RUN")
        elif src == artifact:
            print(f"check-image-context: binary: {artifact} (COPY --from={build['name']})")
        else:
            rel_artifact = posixpath.relpath(artifact, crate_dir)
            if not (re.search(r"(^|[\s/])" + re.escape(rel_artifact) + r"(\s|$)", run)
                    or artifact in run):
                errors.append(f"the build stage's RUN does not copy {artifact} (the output of "
                              f"cargo build {' '.join(cargo_args)}) anywhere")
            if not re.search(re.escape(src) + r"(\s|$)", run):
                errors.append(f"COPY --from={build['name']} {src}: the build stage's RUN does "
                              f"not put the binary there")
            else:
                print(f"check-image-context: binary: {artifact} -> {src} (COPY --from="
                      f"{build['name']})")
entry = next((arg_list(r) for k, r in reversed(final["steps"]) if k == "ENTRYPOINT"), None)
dests = [posixpath.basename(a[-1].rstrip("/")) for a in from_copies]
if entry and posixpath.basename(entry[0]) not in dests:
    errors.append(f"ENTRYPOINT {entry} does not run the copied binary ({dests})")

if errors:
    for e in errors:
        print(f"check-image-context: {e}", file=sys.stderr)
    sys.exit(1)
if not os.path.isfile(os.path.join(rootfs, crate_dir.lstrip("/"), "Cargo.toml")):
    die(f"no Cargo.toml at {crate_dir}, where the build stage runs cargo build")

dev_args = []
skip = False
for a in cargo_args:
    if skip:
        skip = False
    elif a == "--release" or a.startswith("--profile="):
        pass
    elif a == "--profile":
        skip = True
    else:
        dev_args.append(a)
with open(os.path.join(work, "build.env"), "w") as f:
    f.write(f"crate_dir={shlex.quote(os.path.join(rootfs, crate_dir.lstrip('/')))}\n")
    f.write(f"cargo_args=({' '.join(shlex.quote(a) for a in dev_args)})\n")
    f.write(f"copied={copied}\n")
PY

# shellcheck disable=SC1091
source "$work/build.env"
echo "check-image-context: laid out $copied files in $crate_dir"
echo "check-image-context: cargo build ${cargo_args[*]} (dev profile; CARGO_TARGET_DIR=$target_dir)"
start=$(date +%s)
if ! (cd "$crate_dir" && CARGO_TARGET_DIR="$target_dir" cargo build "${cargo_args[@]}"); then
  fail "cargo build ${cargo_args[*]} fails in the image's build context (a file the build needs is not copied, or excluded by .dockerignore?)"
fi
echo "check-image-context: OK: the image's build context ($copied files) builds payrules ($(($(date +%s) - start)) s)"
