#!/usr/bin/env bash
# `make run`: the operator's main job on this machine. Starts (or reuses, after
# `make env-up`) a real kube-apiserver + etcd, the ECS endpoint and the Application
# Auto Scaling endpoint (moto, testenv/strict/aas.py) on loopback,
# installs the CRDs, runs the operator, applies config/samples and says how to
# watch them. Ctrl-C stops what it started.
#
#   ECS_OPERATOR_RUN_NAMESPACE    namespace for the samples (default ecs-demo)
#   ECS_OPERATOR_RUN_METRICS      metrics address (default: a free port on 127.0.0.1)
#   ECS_OPERATOR_RUN_UNTIL_READY  1: exit once the samples are Ready (for tests)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
: "${CARGO_TARGET_DIR:?set by the Makefile}"
NS=${ECS_OPERATOR_RUN_NAMESPACE:-ecs-demo}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
METRICS=${ECS_OPERATOR_RUN_METRICS:-127.0.0.1:$(free_port)}
TESTENV="$CARGO_TARGET_DIR/debug/testenv"
OPERATOR="$CARGO_TARGET_DIR/debug/ecs-operator"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

say "building the operator and the test environment"
"$CARGO" build --quiet --locked -p testenv
"$CARGO" build --quiet --locked --bin ecs-operator

started_env=0
op_pid=
cleanup() {
  trap - EXIT INT TERM
  if [[ -n "$op_pid" ]] && kill -0 "$op_pid" 2>/dev/null; then
    say "stopping the operator"
    kill -TERM "$op_pid" 2>/dev/null || true
    wait "$op_pid" 2>/dev/null || true
  fi
  if [[ $started_env == 1 ]]; then
    say "stopping the test environment"
    "$TESTENV" down >&2 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if exports=$("$TESTENV" env 2>/dev/null); then
  say "reusing the environment started by make env-up"
else
  say "starting kube-apiserver + etcd + ECS and Application Auto Scaling endpoints on 127.0.0.1"
  # Set first: an interrupted start still gets cleaned up (down is harmless).
  started_env=1
  exports=$(ECS_OPERATOR_RUN=1 "$TESTENV" up --detach)
fi
eval "$exports"
export KUBECONFIG AWS_ENDPOINT_URL AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
# Application Auto Scaling calls go to moto (set by the exports unless the ECS endpoint is external).
if [[ -n ${AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING:-} ]]; then
  export AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING
  aas_hint=" AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING=$AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING"
else
  aas_hint=
fi

kubectl() { command kubectl "$@" 2> >(grep -v '^WARNING: version difference' >&2); }

say "installing the CRDs"
kubectl apply --server-side --force-conflicts -f crds/ecs-operator.yaml >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd --all >/dev/null
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

say "starting ecs-operator (namespace $NS, metrics http://$METRICS/metrics)"
RUST_LOG=${RUST_LOG:-info} "$OPERATOR" run --namespace "$NS" --metrics-addr "$METRICS" \
  --resync-interval 1m &
op_pid=$!
ready=0
for _ in $(seq 1 150); do
  if curl -fsS "http://$METRICS/readyz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$op_pid" 2>/dev/null || { echo "ecs-operator exited" >&2; exit 1; }
  sleep 0.2
done
[[ $ready == 1 ]] || { echo "ecs-operator did not become ready in 30s" >&2; exit 1; }

say "applying config/samples"
kubectl apply -n "$NS" -k config/samples >&2

cat >&2 <<MSG

  The samples are being reconciled. In another terminal:

    export KUBECONFIG=$KUBECONFIG AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_REGION=$AWS_REGION AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test$aas_hint
    kubectl -n $NS get ecs -o wide
    kubectl -n $NS get ecsservices -w
    kubectl -n $NS describe ecsservice web
    aws ecs list-services --cluster shop    # the ECS side (any AWS CLI / SDK)
    aws application-autoscaling describe-scalable-targets --service-namespace ecs

  Ctrl-C stops the operator$([[ $started_env == 1 ]] && echo " and the environment").

MSG

if [[ ${ECS_OPERATOR_RUN_UNTIL_READY:-0} == 1 ]]; then
  kubectl -n "$NS" wait --for=condition=Ready --timeout=120s \
    ecscluster/shop ecstaskdefinition/web ecstaskdefinition/worker \
    ecsservice/web ecsservice/worker ecsscheduledtask/nightly-report >&2
  # The strict layer lets RunTask'd tasks exit like real ones, so the one-off run finishes.
  kubectl -n "$NS" wait --for=condition=Complete --timeout=120s ecstask/migrate-0042 >&2
  kubectl -n "$NS" get ecs >&2
  say "samples Ready"
  exit 0
fi
wait "$op_pid"
