#!/usr/bin/env bash
# `make shop-test`: the shop services' own unit tests (Django's test runner) against the local
# environment's PostgreSQL. Each service gets a test database of its own, created and dropped
# by Django. The Python dependencies are the pinned requirements.txt, installed once into a
# virtualenv in the cache (keyed by the file's hash, so a change of pins makes a new one).
set -euo pipefail
shop=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$shop/../.." && pwd)
env_file=${FERRY_ENV_FILE:-$repo/.ferry/env}
[ -f "$env_file" ] || { echo "shop-test: $env_file is missing: run make env-up" >&2; exit 1; }
# shellcheck disable=SC1090
. "$env_file"

cache=${FERRY_CACHE:-$HOME/.cache/ferry}
pins=$(sha256sum "$shop/requirements.txt" | cut -c1-12)
venv=$cache/shop-venv-$pins
# Built in place (a virtualenv's scripts name its path, so it cannot be moved); .complete marks
# one whose install finished.
if [ ! -f "$venv/.complete" ]; then
  echo "shop-test: installing the shop's pinned requirements into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$shop/requirements.txt"
  touch "$venv/.complete"
fi

status=0
for service in user-service order-service notification-service; do
  echo "shop-test: $service" >&2
  # A test database name per run and service, so two runs on one server never collide.
  db="shop_test_${service//-/_}_$$"
  (
    cd "$shop/$service"
    DATABASE_URL=$FERRY_DATABASE_URL SHOP_TEST_DATABASE=$db PYTHONPATH=$shop/shared \
      "$venv/bin/python" manage.py test --noinput -v 1
  ) || status=1
done
exit $status
