#!/usr/bin/env bash
# Vendors the front-end packages the services' pages load into analytics_core/static/vendor/<name>/: the files a
# page needs and the licences, a SHA256SUMS of them, and PIN (package@version and the npm tarball's integrity).
#
#   swagger-ui  npm's swagger-ui-dist: the services' /docs page (analytics_core/docs_pages.py)
#   echarts     Apache ECharts: the dashboard page at the query API's / (api/web/)
#
#   scripts/vendor-assets.sh                    vendor every package again at its pinned version
#   scripts/vendor-assets.sh echarts            vendor one package again; the tarball must have the pinned integrity
#   scripts/vendor-assets.sh echarts 6.2.0      pin another version (its integrity recorded) and vendor it
#
# Needs Node's npm only: `npm pack` fetches the tarball from the configured registry without installing it, so
# none of the package's dependencies or install scripts run. tests/unit/test_docs_pages.py and
# tests/unit/test_dashboard_page.py check the result against SHA256SUMS.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
vendor=$root/analytics_core/static/vendor

# name -> npm package and the files kept, as <path in the package>[:<name here>].
declare -A packages=([swagger-ui]=swagger-ui-dist [echarts]=echarts)
# Swagger UI: the page loads the bundle, the stylesheet and the favicon; Apache-2.0 asks for LICENSE and NOTICE;
# the bundle's LICENSE.txt holds the notices of the libraries built into it.
declare -A files=(
  [swagger-ui]="swagger-ui-bundle.js swagger-ui.css favicon-32x32.png LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt"
  [echarts]="dist/echarts.min.js:echarts.min.js LICENSE NOTICE"
)

command -v npm >/dev/null 2>&1 || { echo "npm not found: install Node.js (with npm), then run $0 again" >&2; exit 1; }

vendor_one() {
  local name=$1 wanted=${2:-} package=${packages[$1]} dest=$vendor/$1
  local pinned="" pinned_integrity="" version work resolved tarball integrity entry from to kept=()
  [[ -f $dest/PIN ]] && read -r pinned pinned_integrity <"$dest/PIN"
  version=${wanted:-${pinned#"$package@"}}
  [[ -n $version ]] || { echo "no $dest/PIN: name the version to pin, e.g. $0 $name 1.0.0" >&2; return 2; }

  work=$(mktemp -d)
  (cd "$work" && npm pack "$package@$version" --json --ignore-scripts --silent >pack.json)
  read -r resolved tarball integrity < <(node -e '
    const [p] = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(p.version, p.filename, p.integrity);' "$work/pack.json")
  if [[ -z $wanted && $integrity != "$pinned_integrity" ]]; then
    echo "$package@$resolved from npm has integrity $integrity, but PIN says $pinned_integrity:" >&2
    echo "the registry serves another tarball than the one pinned; find out why before vendoring it" >&2
    rm -rf "$work"
    return 1
  fi

  tar -xzf "$work/$tarball" -C "$work"
  mkdir "$work/out"
  for entry in ${files[$name]}; do
    from=${entry%%:*} to=${entry#*:}
    [[ $entry == *:* ]] || to=$(basename "$from")
    cp "$work/package/$from" "$work/out/$to"
    kept+=("$to")
  done
  (cd "$work/out" && sha256sum "${kept[@]}" >SHA256SUMS)
  echo "$package@$resolved $integrity" >"$work/out/PIN"

  rm -rf "$dest"
  mkdir -p "$dest"
  cp "$work/out/"* "$dest/"
  rm -rf "$work"
  echo "vendored $package@$resolved into ${dest#"$root/"}"
}

if [[ $# -eq 0 ]]; then
  for name in swagger-ui echarts; do vendor_one "$name"; done
else
  [[ -n ${packages[$1]:-} ]] || { echo "unknown package '$1': one of ${!packages[*]}" >&2; exit 2; }
  vendor_one "$@"
fi
