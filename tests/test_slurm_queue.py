"""The sweep's view of the Slurm queue, without a cluster (sweep.slurm.QueueWatch)."""


def test_a_job_unlisted_for_a_moment_is_not_reported_ended(monkeypatch, tmp_path):
    """A requeue passes through a terminal state that squeue does not list: only a job unlisted for the grace
    period has left the queue (seen on a real cluster: a time-limited job reported FAILED while being requeued)."""
    from types import SimpleNamespace

    from memaware.sweep import slurm

    class Job:  # hashable like submitit's job handles
        job_id = "7"
        paths = SimpleNamespace(result_pickle=tmp_path / "none.pkl", stderr=None)

    listed: dict[str, tuple[str, str]] = {}
    monkeypatch.setattr(slurm, "queue_states", lambda ids: dict(listed))
    monkeypatch.setattr(slurm, "ended_reason", lambda job_id, log=None: f"job {job_id} ended FAILED")
    clock = [100.0]
    monkeypatch.setattr(slurm.time, "monotonic", lambda: clock[0])
    job = Job()
    watch = slurm.QueueWatch(grace_s=15.0)
    watch.look([job])  # unlisted once (requeue in passing)
    clock[0] += 10
    listed["7"] = ("PENDING", "BeginTime")  # queued again: the absence is forgotten
    watch.look([job])
    del listed["7"]
    clock[0] += 1
    watch.look([job])
    clock[0] += 14
    watch.look([job])
    assert job not in watch.ended  # 14 s unlisted since it was last seen
    clock[0] += 1
    watch.look([job])
    assert watch.ended[job] == "job 7 ended FAILED"


def test_a_job_whose_log_says_requeue_gets_the_longer_grace(monkeypatch, tmp_path):
    """Slurm's own last word in the job's log, '... CANCELLED ... DUE TO JOB REQUEUE', means the job is coming back:
    it is not reported ended after the short grace (seen in CI: a loaded controller took longer than 15 s), only
    after ``requeue_grace_s``."""
    from types import SimpleNamespace

    from memaware.sweep import slurm

    class Job:
        job_id = "26"
        paths = SimpleNamespace(result_pickle=tmp_path / "none.pkl", stderr=None)

    monkeypatch.setattr(slurm, "queue_states", lambda ids: {})
    why = "job 26 ended FAILED (reason NonZeroExitCode): *** STEP 26.0 ON vm CANCELLED AT t DUE TO JOB REQUEUE ***"
    monkeypatch.setattr(slurm, "ended_reason", lambda job_id, log=None: why)
    clock = [0.0]
    monkeypatch.setattr(slurm.time, "monotonic", lambda: clock[0])
    job, watch = Job(), slurm.QueueWatch(grace_s=15.0, requeue_grace_s=120.0)
    for t in (0.0, 20.0, 119.0):
        clock[0] = t
        watch.look([job])
        assert job not in watch.ended
    clock[0] = 120.0
    watch.look([job])
    assert watch.ended[job] == why
