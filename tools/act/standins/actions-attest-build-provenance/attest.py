"""STAND-IN for actions/attest-build-provenance@v2 in act runs; see action.yml. Written for this project."""

import hashlib
import json
import os
import sys
from pathlib import Path


def main() -> int:
    subjects = [Path(line.strip()) for line in os.environ.get("SUBJECTS", "").splitlines() if line.strip()]
    missing = [str(s) for s in subjects if not s.is_file()]
    if not subjects or missing:
        print(f"::error::attest-build-provenance stand-in: no such subject file: {', '.join(missing) or '(none given)'}")
        return 1
    out = Path(os.environ["ACT_STANDIN_ATTESTATIONS"])
    out.mkdir(parents=True, exist_ok=True)
    env = os.environ
    run_url = f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env['GITHUB_REPOSITORY']}/actions/runs/{env.get('GITHUB_RUN_ID', '1')}"
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": s.name, "digest": {"sha256": hashlib.sha256(s.read_bytes()).hexdigest()}} for s in subjects],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                "externalParameters": {"workflow": {"ref": env.get("GITHUB_REF", ""), "repository": env["GITHUB_REPOSITORY"],
                                                    "path": env.get("GITHUB_WORKFLOW_REF", env.get("GITHUB_WORKFLOW", ""))}},
                "resolvedDependencies": [{"uri": f"git+https://github.com/{env['GITHUB_REPOSITORY']}",
                                          "digest": {"gitCommit": env.get("GITHUB_SHA", "")}}],
            },
            "runDetails": {"builder": {"id": run_url}, "metadata": {"invocationId": f"{run_url}/attempts/1"}},
        },
        "_standin": "recorded by the act stand-in: NOT signed (no OIDC token or Sigstore here), not stored on GitHub",
    }
    bundle = out / f"{subjects[0].name}.intoto.json"
    bundle.write_text(json.dumps(statement, indent=2) + "\n", encoding="utf-8")
    with open(env["GITHUB_OUTPUT"], "a", encoding="utf-8") as f:
        f.write(f"bundle-path={bundle}\nattestation-id=standin-{statement['subject'][0]['digest']['sha256'][:12]}\n"
                f"attestation-url={run_url}/attestations (stand-in: not stored)\n")
    print(f"provenance of {', '.join(s.name for s in subjects)} recorded UNSIGNED at {bundle} (stand-in)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
