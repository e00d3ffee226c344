# Sourced by the bench scripts: one fresh demo gateway with its admission limits raised out
# of the way, checked (260 requests in a row admitted); and bench/run's row 3 policy set.
#
#   raised_demo BINARY PATH
#
# sets $dir, $port, $admin, $pid (stopped on exit), $token (the demo integration's) and
# $op (the operator's).

# CPU a process has used so far (user and system, all its threads), in clock ticks.
process_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Microseconds of CPU a request, from two readings of process_ticks around COUNT requests.
cpu_us_per_request() { # ticks_before ticks_after count
  python3 -c "import sys; t0, t1, n = map(int, sys.argv[1:4]); print(round((t1 - t0) * 1e6 / int(sys.argv[4]) / max(n, 1), 1))" "$1" "$2" "$3" "$(getconf CLK_TCK)"
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

raised_demo() {
  local bin=$1 path=$2 refused raised=0
  dir=$(mktemp -d)
  port=$(free_port) admin=$(free_port)
  env -u RUST_BACKTRACE OPENPORT_LOG=warn "$bin" demo --data-dir "$dir" --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin >/dev/null 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
  for _ in $(seq 150); do [ -f "$dir/demo-credentials.json" ] && curl -fs 127.0.0.1:$port/healthz >/dev/null 2>&1 && break; sleep 0.2; done
  cat >> "$dir/openport.toml" <<'TOML'
[admission]
max_in_flight = 100000
[admission.default]
requests = 100000000
window_seconds = 1
concurrency = 100000
TOML
  token=$(demo_credential agent_tokens "Demo Integration")
  op=$(demo_credential admin_tokens operator)
  # The gateway picks the edited config up on its own; wait until it has.
  for _ in $(seq 20); do
    sleep 0.5
    refused=$(for _ in $(seq 260); do curl -s -o /dev/null -w "%{http_code}\n" "127.0.0.1:$port$path" -H "Authorization: Bearer $token"; done | grep -vc '^200$' || true)
    [ "$refused" = 0 ] && { raised=1; break; }
  done
  [ $raised = 1 ] || { echo "the raised limits never applied" >&2; return 1; }
}

demo_credential() { # section name
  python3 -c "import json,sys;print(json.load(open('$dir/demo-credentials.json'))[sys.argv[1]][sys.argv[2]])" "$@"
}

# Writes FILE: 1,000 forbids about other apps' arguments, the policy set bench/run's row 3
# and bench/reload-stall load beside the default one.
bench_policies() { # file
  python3 - "$1" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(1000):
        tool = ("transaction.create", "transaction.update")[i % 2]
        f.write(f'@id("bench.p{i}")\nforbid (principal == OpenPort::App::"app_{i % 100}", action in OpenPort::Action::"{tool}", resource) when {{ context has args && context.args has amount_home && context.args.amount_home.greaterThan(decimal("{i + 1}.0")) }};\n')
PY
}
