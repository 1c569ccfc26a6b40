"""PreflightCheck on the calibration sweep (seed 0), labelled by each run's outcome from benchmarks/results/sweep.json:
converged runs should get no warning; failed runs should get their labelled cause.

    python benchmarks/preflight_sweep.py   # writes /tmp/pfs/out.json
"""
import sys, json, tempfile, warnings, logging, time
sys.path.insert(0, "/work/main")
warnings.filterwarnings("ignore")
import lightning as L
from benchmarks.sweep.setups import jobs, Job, ERRORS, USUAL_LR
from benchmarks.sweep.labels import best_lrs, label
from benchmarks.sweep.data import TARGET_SCALE, SweepData
from benchmarks.sweep.models import SweepModule
from lightning_convergence import PreflightCheck
recs = json.load(open("/work/main/benchmarks/results/sweep.json"))["records"]
obs = [r for r in recs if not r.get("remediate")]
best = best_lrs(obs)
by = {(r["arch"], r["optimizer"], r["lr"], r["seed"], r["error"]): r for r in obs}
work = [j for j in jobs(seeds=(0,)) if not j.remediate]
out = []
for j in work:
    r = by.get((j.arch, j.optimizer, j.lr, j.seed, j.error))
    if r is None or r.get("crash"):
        continue
    lab = label(r, best)
    L.seed_everything(j.seed, verbose=False)
    scale = TARGET_SCALE if j.error == "unscaled_targets" else 1.0
    check = PreflightCheck(enabled=True, max_seconds=20.0)
    t = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                  callbacks=[check], default_root_dir=tempfile.mkdtemp())
    try:
        t.fit(SweepModule(j.arch, j.optimizer, j.lr, j.error, target_scale=scale), datamodule=SweepData(j.arch, j.seed, j.error))
    except Exception as e:
        out.append({"job": j.name, "half": j.half, "status": lab.status, "cause": lab.cause, "crash": str(e)[:100]}); continue
    warned = sorted({d["causes"][0]["cause"] for d in check.records()["diagnoses"] if d["severity"] != "info"})
    out.append({"job": j.name, "half": j.half, "status": lab.status, "cause": lab.cause, "warned": warned})
    print(out[-1], flush=True)
import os; os.makedirs("/tmp/pfs", exist_ok=True); json.dump(out, open("/tmp/pfs/out.json", "w"), indent=1)
