#!/bin/sh
# Entry point of the students' image. DockerSpawner starts the container as root (jupyterhub_config.py);
# this gives the container's user, jovyan, the uid the hub chose for this student (NB_UID, one per hub
# user, so that nbgrader's exchange keeps students apart by file ownership as it does for Unix accounts),
# then runs the server as that user. Without root it just runs the command.
set -eu
if [ "$(id -u)" = 0 ]; then
  uid=${NB_UID:-1000}
  case $uid in ''|*[!0-9]*) echo "NB_UID must be a number, not '$uid'" >&2; exit 2 ;; esac
  if [ "$uid" -lt 1000 ]; then echo "NB_UID must be 1000 or more, not $uid" >&2; exit 2; fi
  if [ "$(id -u jovyan)" != "$uid" ]; then
    groupmod --non-unique --gid "$uid" jovyan
    usermod --non-unique --uid "$uid" --gid "$uid" jovyan
  fi
  chown "$uid:$uid" /home/jovyan
  export HOME=/home/jovyan USER=jovyan LOGNAME=jovyan
  exec setpriv --reuid="$uid" --regid="$uid" --init-groups --inh-caps=-all --bounding-set=-all "$@"
fi
exec "$@"
