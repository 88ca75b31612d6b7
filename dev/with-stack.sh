#!/usr/bin/env bash
# with-stack.sh CMD…: runs CMD with the dev stack up. If the stack was not
# already running, it is started for CMD and stopped afterwards, whatever
# CMD's outcome; a stack that was already up is left as it was.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

owner="with-stack-$$"
SLUICE_DEV_OWNER=$owner "$DEV_DIR/up.sh"
trap '"$DEV_DIR/down.sh" --if-owner "$owner"' EXIT
"$@"
