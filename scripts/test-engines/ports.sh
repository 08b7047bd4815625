# Sourced by the engine scripts (ceph.sh, postgres.sh): picking a free loopback port.

port_free () {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The first free port from $1 on, trying at most 100.
first_free_port () {
  local port=$1
  while ! port_free "$port" && ((port < $1 + 100)); do port=$((port + 1)); done
  echo "$port"
}
