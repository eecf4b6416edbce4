#!/bin/sh
# Fetch ReDoc and Swagger UI from npm into DEST (default app/static/docs), so
# the docs pages are served by the app itself. Used by `make docs-assets` and
# by the Dockerfile: the versions live here only.
set -eu
REDOC_VERSION=2.5.4
SWAGGER_UI_VERSION=5.35.0
dest=${1:-app/static/docs}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "redoc@$REDOC_VERSION" "swagger-ui-dist@$SWAGGER_UI_VERSION" >/dev/null)
rm -rf "$dest"
mkdir -p "$dest/redoc" "$dest/swagger-ui"
tar -xzf "$tmp/redoc-$REDOC_VERSION.tgz" -C "$dest/redoc" --strip-components=2 \
    package/bundles/redoc.standalone.js
tar -xzf "$tmp/redoc-$REDOC_VERSION.tgz" -C "$dest/redoc" --strip-components=1 package/LICENSE
tar -xzf "$tmp/swagger-ui-dist-$SWAGGER_UI_VERSION.tgz" -C "$dest/swagger-ui" --strip-components=1 \
    package/swagger-ui.css package/swagger-ui-bundle.js \
    package/swagger-ui-standalone-preset.js package/LICENSE
echo "redoc $REDOC_VERSION, swagger-ui-dist $SWAGGER_UI_VERSION" > "$dest/VERSIONS"
