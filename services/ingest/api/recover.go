package api

import (
	"errors"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/ids"
)

// Recover jobs (POST /v1/endpoints/{id}/recover) are objects of the config
// topic, so every replica's view holds them: the replica that took the
// request only writes the job, any replica answers GET, and a
// RecoverRunner in each replica runs the jobs (recover_runner.go).

// RecoverRequest is the body of POST /v1/endpoints/{id}/recover: the time
// window (when the deliveries were dead-lettered) to re-send.
type RecoverRequest struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
}

// RecoverJobJSON is a recover job and its progress.
type RecoverJobJSON struct {
	ID         string    `json:"id"`
	EndpointID string    `json:"endpoint_id"`
	Since      time.Time `json:"since"`
	Until      time.Time `json:"until"`
	// Status is running, done, incomplete (the time budget ran out before
	// every partition was read to its end; Partitions say how far) or
	// failed.
	Status string `json:"status"`
	// Scanned counts the endpoint's dead letters read, Recovered those
	// sent again, Skipped those that could not be (undecodable).
	Scanned   int `json:"scanned"`
	Recovered int `json:"recovered"`
	Skipped   int `json:"skipped"`
	// Truncated: the job stopped at its limit; ask again from the time of
	// the last delivery it sent.
	Truncated bool   `json:"truncated"`
	Error     string `json:"error,omitempty"`
	// Partitions are the dead-letter partitions the job reads: from
	// start_offset up to end_offset, the end when the job was created;
	// next_offset is how far it has read.
	Partitions []RecoverPartitionJSON `json:"partitions"`
	Started    time.Time              `json:"started"`
	Updated    time.Time              `json:"updated"`
	Finished   *time.Time             `json:"finished,omitempty"`
}

// RecoverPartitionJSON is one partition of a recover job.
type RecoverPartitionJSON struct {
	Partition   int32 `json:"partition"`
	StartOffset int64 `json:"start_offset"`
	EndOffset   int64 `json:"end_offset"`
	NextOffset  int64 `json:"next_offset"`
}

// recoverStatus names a job's status in answers.
var recoverStatus = map[sluicev1.RecoverJobStatus]string{
	sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_RUNNING:    "running",
	sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_DONE:       "done",
	sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_INCOMPLETE: "incomplete",
	sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_FAILED:     "failed",
}

func recoverJobJSON(j *sluicev1.RecoverJob) RecoverJobJSON {
	out := RecoverJobJSON{ID: j.Id, EndpointID: j.EndpointId, Since: fromMs(j.SinceMs), Until: fromMs(j.UntilMs),
		Status: recoverStatus[j.Status], Scanned: int(j.Scanned), Recovered: int(j.Recovered), Skipped: int(j.Skipped),
		Truncated: j.Truncated, Error: j.Error, Partitions: make([]RecoverPartitionJSON, len(j.Partitions)),
		Started: fromMs(j.CreatedAtMs), Updated: fromMs(j.UpdatedAtMs)}
	if out.Status == "" {
		out.Status = "failed" // a status this build does not know
	}
	for i, p := range j.Partitions {
		out.Partitions[i] = RecoverPartitionJSON{Partition: p.Partition, StartOffset: p.StartOffset,
			EndOffset: p.EndOffset, NextOffset: p.NextOffset}
	}
	if j.FinishedAtMs != 0 {
		f := fromMs(j.FinishedAtMs)
		out.Finished = &f
	}
	return out
}

func recoverJobRecord(j *sluicev1.RecoverJob) *sluicev1.ConfigRecord {
	return &sluicev1.ConfigRecord{Object: &sluicev1.ConfigRecord_RecoverJob{RecoverJob: j}}
}

// Bounds of recover jobs.
const (
	// recoverJobPrefix starts a recover job's id.
	recoverJobPrefix = "rcv"
	// recoverJobBudget bounds a job's wall time from its creation: reading
	// a week of the dead-letter topic and producing at most MaxRecover
	// deliveries takes far less; a job that runs out (a broker this slow,
	// or replicas down that long) ends incomplete, saying how far it read.
	recoverJobBudget = 10 * time.Minute
	// DefaultMaxRecoverJobs is how many jobs of one tenant may run at once
	// unless DeliveriesOptions says otherwise. Each reads the whole
	// dead-letter topic (every tenant's) with a client of its own.
	DefaultMaxRecoverJobs = 4
	// recoverRetryAfter is the Retry-After of a tenant at its limit of
	// running jobs: most jobs end within seconds.
	recoverRetryAfter = "10"
)

// recoverRunningError refuses a job for an endpoint that has one running.
type recoverRunningError struct{ job string }

func (e recoverRunningError) Error() string { return "recover job " + e.job + " is running" }

// tooManyJobsError refuses a job beyond the tenant's running jobs.
type tooManyJobsError struct{ running, most int }

func (e tooManyJobsError) Error() string {
	return fmt.Sprintf("%d recover jobs running, at most %d", e.running, e.most)
}

// recoverEndpoint serves POST /v1/endpoints/{endpoint_id}/recover: a job
// that re-sends the endpoint's dead letters of a time window as new
// deliveries marked recover. It captures where each partition of the
// dead-letter topic ends now, and the job reads no further.
func (a *API) recoverEndpoint(r *request) {
	dl := a.opts.Deliveries
	if dl.Sink == nil || dl.Dead == nil {
		WriteProblem(r.RequestCtx, fasthttp.StatusServiceUnavailable, "unavailable", "this server cannot recover deliveries")
		return
	}
	id := r.param("endpoint_id")
	ep, ok := a.endpoint(r, id)
	if !ok {
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found", "endpoint "+trunc(id)+" does not exist")
		return
	}
	var in RecoverRequest
	if !decodeBody(r.RequestCtx, &in) {
		return
	}
	now := a.now()
	var errs []FieldError
	switch {
	case in.Since.IsZero():
		errs = append(errs, FieldError{"since", "is required"})
	case in.Until.IsZero():
		errs = append(errs, FieldError{"until", "is required"})
	case !in.Since.Before(in.Until):
		errs = append(errs, FieldError{"since", "must be before until"})
	case in.Until.Sub(in.Since) > maxRecoverWindow:
		errs = append(errs, FieldError{"since", "must be at most 7 days before until"})
	case in.Since.After(now):
		errs = append(errs, FieldError{"since", "is in the future"})
	}
	if len(errs) > 0 {
		invalid(r.RequestCtx, errs)
		return
	}
	if ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED {
		WriteProblem(r.RequestCtx, fasthttp.StatusConflict, "endpoint-disabled",
			"endpoint "+ep.Id+" is disabled, so its recovered deliveries would be parked again; enable it first")
		return
	}
	ctx, cancel := a.writeCtx()
	defer cancel()
	parts, err := dl.Dead.Bounds(ctx, in.Since)
	if err != nil {
		a.log.Warn("finding where to recover from", "endpoint", ep.Id, "err", err)
		r.Response.Header.Set("Retry-After", "1")
		WriteProblem(r.RequestCtx, fasthttp.StatusServiceUnavailable, "unavailable",
			"the dead-letter topic could not be read; retry shortly")
		return
	}
	job := &sluicev1.RecoverJob{Id: ids.New(recoverJobPrefix), TenantId: r.caller.tenant, EndpointId: ep.Id,
		SinceMs: in.Since.UnixMilli(), UntilMs: in.Until.UnixMilli(),
		Status: sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_RUNNING, Partitions: parts,
		CreatedAtMs: ms(now), UpdatedAtMs: ms(now), DeadlineAtMs: ms(now.Add(recoverJobBudget)),
		MaxDeliveries: uint32(dl.maxRecover())}
	if !hasUnread(parts) { // nothing parked since then: done already
		job.Status, job.FinishedAtMs = sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_DONE, ms(now)
	}
	tenant, most := r.caller.tenant, dl.maxRecoverJobs()
	_, err = a.store.Update(ctx, job.Id, func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) {
		if cur != nil {
			return nil, conflictError{"recover job " + job.Id + " already exists"}
		}
		if e, ok := a.store.Get(ep.Id); !ok || e.GetEndpoint().GetTenantId() != tenant {
			return nil, errNotFound
		}
		if job.Status != sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_RUNNING {
			return recoverJobRecord(job), nil
		}
		// Counted here, where writes are serialised, so two requests on
		// two replicas cannot both pass.
		running := 0
		for _, rec := range a.store.TenantObjects(tenant) {
			j := rec.GetRecoverJob()
			if j == nil || j.Status != sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_RUNNING {
				continue
			}
			if j.EndpointId == ep.Id {
				return nil, recoverRunningError{j.Id}
			}
			running++
		}
		if running >= most {
			return nil, tooManyJobsError{running, most}
		}
		return recoverJobRecord(job), nil
	})
	var busy recoverRunningError
	var many tooManyJobsError
	switch {
	case errors.As(err, &busy):
		WriteProblem(r.RequestCtx, fasthttp.StatusConflict, "recover-running", fmt.Sprintf(
			"recover job %s is already running for endpoint %s (GET /v1/endpoints/%s/recover/%s); recover again once it has ended",
			busy.job, ep.Id, ep.Id, busy.job))
		return
	case errors.As(err, &many):
		// 429, not 409: nothing about this request conflicts, the tenant
		// only has to wait for one of its jobs to end, which needs no
		// action from it; clients retry a 429 after Retry-After by
		// themselves.
		r.Response.Header.Set("Retry-After", recoverRetryAfter)
		WriteProblem(r.RequestCtx, fasthttp.StatusTooManyRequests, "too-many-recover-jobs", fmt.Sprintf(
			"tenant %s has %d recover jobs running, the most it may; retry once one has ended", tenant, many.running))
		return
	case err != nil:
		a.writeFailed(r, "endpoint "+ep.Id, err)
		return
	}
	setLocation(r, "/v1/endpoints/"+ep.Id+"/recover/"+job.Id)
	writeJSON(r.RequestCtx, fasthttp.StatusAccepted, recoverJobJSON(job))
}

// hasUnread reports whether any partition has offsets left to read.
func hasUnread(parts []*sluicev1.RecoverPartition) bool {
	for _, p := range parts {
		if p.NextOffset < p.EndOffset {
			return true
		}
	}
	return false
}

func setLocation(r *request, path string) { r.Response.Header.Set("Location", path) }

// getRecoverJob serves GET /v1/endpoints/{endpoint_id}/recover/{job_id}
// from this replica's view of the config topic, whichever replica runs the
// job.
func (a *API) getRecoverJob(r *request) {
	id := r.param("endpoint_id")
	if _, ok := a.endpoint(r, id); !ok {
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found", "endpoint "+trunc(id)+" does not exist")
		return
	}
	rec, ok := a.store.Get(r.param("job_id"))
	job := rec.GetRecoverJob()
	if !ok || job == nil || job.TenantId != r.caller.tenant || job.EndpointId != id {
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found",
			"recover job "+trunc(r.param("job_id"))+" does not exist (finished jobs are kept 7 days)")
		return
	}
	writeJSON(r.RequestCtx, fasthttp.StatusOK, recoverJobJSON(job))
}
