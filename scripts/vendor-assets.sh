#!/usr/bin/env bash
# Vendors Swagger UI (npm's swagger-ui-dist) into analytics_core/static/vendor/swagger-ui/, where the services'
# /docs page loads it from (analytics_core/docs_pages.py): the files the page needs and the licences, a
# SHA256SUMS of them, and PIN (package@version and the npm tarball's integrity).
#
#   scripts/vendor-assets.sh          vendor the pinned version again; the tarball must have the pinned integrity
#   scripts/vendor-assets.sh 5.37.0   pin another version (its integrity recorded) and vendor it
#
# Needs Node's npm only: `npm pack` fetches the tarball from the configured registry without installing it, so
# none of the package's dependencies or install scripts run. tests/unit/test_docs_pages.py checks the result.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/analytics_core/static/vendor/swagger-ui
package=swagger-ui-dist
# The page loads the bundle, the stylesheet and the favicon; Apache-2.0 asks for LICENSE and NOTICE; the bundle's
# LICENSE.txt holds the notices of the libraries built into it.
files=(swagger-ui-bundle.js swagger-ui.css favicon-32x32.png LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt)

command -v npm >/dev/null 2>&1 || { echo "npm not found: install Node.js (with npm), then run $0 again" >&2; exit 1; }
pinned="" pinned_integrity=""
[[ -f $dest/PIN ]] && read -r pinned pinned_integrity <"$dest/PIN"
version=${1:-${pinned#"$package@"}}
[[ -n $version ]] || { echo "no $dest/PIN: name the version to pin, e.g. $0 5.36.0" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "$package@$version" --json --ignore-scripts --silent >pack.json)
read -r resolved tarball integrity < <(node -e '
  const [p] = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(p.version, p.filename, p.integrity);' "$work/pack.json")
if [[ $# -eq 0 && $integrity != "$pinned_integrity" ]]; then
  echo "$package@$resolved from npm has integrity $integrity, but PIN says $pinned_integrity:" >&2
  echo "the registry serves another tarball than the one pinned; find out why before vendoring it" >&2
  exit 1
fi

tar -xzf "$work/$tarball" -C "$work"
mkdir "$work/out"
for f in "${files[@]}"; do
  cp "$work/package/$f" "$work/out/$f"
done
(cd "$work/out" && sha256sum "${files[@]}" >SHA256SUMS)
echo "$package@$resolved $integrity" >"$work/out/PIN"

rm -rf "$dest"
mkdir -p "$dest"
cp "$work/out/"* "$dest/"
echo "vendored $package@$resolved into ${dest#"$root/"}"
