#!/bin/bash
# Health check of the stand-in: the broker accepts connections on the port it
# serves (whatever --bootstrap-server says).
IFS=: read -r host port </tmp/listener || exit 1
exec 3<>"/dev/tcp/$host/$port"
