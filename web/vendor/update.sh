#!/usr/bin/env bash
# Copies the browser libraries the pages import from web/node_modules into web/vendor/, with their
# licences, and records what was copied in web/vendor/VERSIONS. The vendored files are committed:
# serving the pages needs neither Node.js nor npm. Node.js and npm are needed only to update them:
#
#   npm install --prefix web uplot@1.6.33     # or edit web/package.json; then `npm ci --prefix web`
#   web/vendor/update.sh                      # (`make vendor` runs both steps)
#   git add web/package.json web/package-lock.json web/vendor && git commit
set -euo pipefail
cd "$(dirname "$0")/.."   # web/
modules=node_modules
vendor=vendor
[ -d "$modules" ] || { echo "web/node_modules is missing: run 'npm ci --prefix web' first" >&2; exit 1; }

field() {  # field PACKAGE NAME: a field of the installed package's package.json
    node -p "require('./$modules/$1/package.json').$2"
}

versions="$vendor/VERSIONS"
{
    echo "# The browser libraries vendored here, written by web/vendor/update.sh from web/node_modules"
    echo "# (npm packages pinned by web/package.json and web/package-lock.json). Do not edit by hand."
    echo "# package  version  licence  files (from node_modules/PACKAGE/)"
} >"$versions"

# vendor PACKAGE FILE...: copies the files (paths inside the npm package) and its LICENSE to vendor/PACKAGE/
vendor() {
    local package=$1 file
    shift
    rm -rf "${vendor:?}/$package"
    mkdir -p "$vendor/$package"
    for file in "$@"; do
        cp "$modules/$package/$file" "$vendor/$package/"
    done
    cp "$modules/$package/LICENSE" "$vendor/$package/LICENSE"
    echo "$package  $(field "$package" version)  $(field "$package" license)  $*" >>"$versions"
}

# bundled PACKAGE INTO: a package whose code another package's build contains; its licence goes along
bundled() {
    local package=$1 into=$2
    cp "$modules/$package/LICENSE" "$vendor/$into/LICENSE.${package##*/}"
    echo "$package  $(field "$package" version)  $(field "$package" license)  (bundled in $into's files)" >>"$versions"
}

# socket.io-client: the ES module build, which bundles its browser dependencies (debug is left out
# of it; ws and xmlhttprequest-ssl are for Node.js only)
vendor socket.io-client dist/socket.io.esm.min.js dist/socket.io.esm.min.js.map
for package in engine.io-client engine.io-parser socket.io-parser @socket.io/component-emitter; do
    bundled "$package" socket.io-client
done
# uPlot: the ES module build and its style sheet
vendor uplot dist/uPlot.esm.js dist/uPlot.min.css
# Swagger UI (the API docs page, /docs): its browser bundle and style sheet, with the licences of
# what the bundle holds and Apache-2.0's NOTICE
vendor swagger-ui-dist swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css NOTICE

echo "web/vendor updated:"
grep -v '^#' "$versions"
