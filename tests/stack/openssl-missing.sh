#!/bin/sh
# Mounted over /usr/bin/openssl in nginx by the stack tier (docker-compose.acme.yml): the
# official nginx Alpine image has no openssl command, so a stand-in image that has one must
# not let a start that needs it pass.
echo "openssl: not found (the official nginx Alpine image has no openssl command)" >&2
exit 127
