#!/usr/bin/env bash
# Builds the DocC documentation of MaskCore, UserProto and ExampleProtocols
# with swift-docc-plugin and fails on any warning (docs/documentation.md).
#
# usage: scripts/docs.sh [--no-coverage] [--output DIR] [TARGET...]
#   TARGET...       the targets to build (default: MaskCore UserProto ExampleProtocols)
#   --output DIR    where the archives go, one DIR/TARGET.doccarchive each
#                   (default: .build/docs)
#   --no-coverage   skip scripts/doc-coverage.py
#
# Three checks, all run; the script exits 1 if any failed:
#   1. scripts/doc-coverage.py: every public and open declaration has a `///`
#      summary line.
#   2. The Swift excerpts of the DocC articles that name their source file in
#      their first line (`// Sources/...`, as in UserProto.docc/WritingAProtocol.md)
#      appear verbatim in that file, so the tutorial cannot drift from code that
#      compiles.
#   3. `swift package generate-documentation --target TARGET --warnings-as-errors`
#      for each target: docc turns every warning (a symbol link that does not
#      resolve, a documented parameter that does not exist, ...) into an error and
#      exits non-zero; the log is also searched for "warning:" and "error:", so a
#      warning from the symbol-graph build or the plugin itself fails too.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=()
out=.build/docs
coverage=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-coverage) coverage=0 ;;
    --output)
      out="${2:?--output needs a directory}"
      shift
      ;;
    -h | --help)
      sed -n '2,22p' "$0"
      exit 0
      ;;
    -*)
      echo "docs.sh: unknown option $1" >&2
      exit 2
      ;;
    *) targets+=("$1") ;;
  esac
  shift
done
[ ${#targets[@]} -gt 0 ] || targets=(MaskCore UserProto ExampleProtocols)

failed=()

if [ "$coverage" = 1 ]; then
  echo "== doc coverage (scripts/doc-coverage.py)"
  python3 scripts/doc-coverage.py || failed+=("doc coverage")
fi

echo "== DocC article excerpts"
python3 - <<'EOF' || failed+=("article excerpts")
import pathlib, sys

problems = 0
checked = 0
for article in sorted(pathlib.Path("Sources").glob("**/*.docc/*.md")):
    block = None
    for line in article.read_text().split("\n"):
        if block is None and line == "```swift":
            block = []
        elif block is not None and line == "```":
            if block and block[0].startswith("// Sources/"):
                source = pathlib.Path(block[0][3:])
                excerpt = "\n".join(block[1:])
                checked += 1
                if not source.is_file():
                    print(f"{article}: the excerpt names {source}, which does not exist")
                    problems += 1
                elif excerpt not in source.read_text():
                    print(f"{article}: this excerpt is no longer verbatim in {source}:\n{excerpt}\n")
                    problems += 1
            block = None
        elif block is not None:
            block.append(line)
print(f"{checked} excerpts checked, {problems} differ from their sources")
sys.exit(1 if problems else 0)
EOF

mkdir -p "$out"
for target in "${targets[@]}"; do
  echo "== swift package generate-documentation --target $target"
  log="$out/$target.log"
  status=0
  swift package --allow-writing-to-directory "$out" \
    generate-documentation --target "$target" --output-path "$out/$target.doccarchive" \
    --warnings-as-errors 2>&1 | tee "$log" || status=$?
  if [ "$status" != 0 ]; then
    failed+=("$target (exit $status)")
  elif grep -Eq '(^|[^[:alnum:]_])(warning|error):' "$log"; then
    failed+=("$target (warnings in $log)")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  printf 'docs.sh: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "docs.sh: ${targets[*]} built without warnings; archives in $out"
