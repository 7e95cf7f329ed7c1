#!/usr/bin/env bash
# Lints the cluster files: bash syntax (and shellcheck when installed) of the Slurm script; YAML
# syntax (and yamllint when installed) of the Kubernetes manifests, plus the facts `deva run
# --shard auto` relies on: an Indexed Job whose JOB_COMPLETIONS equals .spec.completions, and
# restartPolicy Never (needed by backoffLimitPerIndex). Needs python3 with PyYAML.
set -euo pipefail
cd "$(dirname "$0")"

bash -n slurm/deva-array.sh
grep -q -- '--shard auto' slurm/deva-array.sh
if command -v shellcheck >/dev/null; then shellcheck slurm/deva-array.sh; fi
if command -v yamllint >/dev/null; then
  yamllint -d '{extends: default, rules: {line-length: {max: 100}, document-start: disable}}' kubernetes/
fi
python3 - kubernetes/job.yaml kubernetes/merge-job.yaml <<'PY'
import sys, yaml
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "Job", path
        spec = doc["spec"]
        pod = spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never", path
        (c,) = pod["containers"]
        if c["args"][0] != "run":
            continue
        assert spec["completionMode"] == "Indexed", path
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env.get("JOB_COMPLETIONS") == str(spec["completions"]), \
            f"{path}: JOB_COMPLETIONS must equal .spec.completions"
        i = c["args"].index("--shard")
        assert c["args"][i + 1] == "auto", path
        mounts = {m["name"] for m in c["volumeMounts"]}
        assert mounts <= {v["name"] for v in pod["volumes"]}, path
    print(f"{path}: ok")
PY
