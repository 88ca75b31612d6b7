package api

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/ids"
)

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
	// Status is running, done or failed.
	Status string `json:"status"`
	// Scanned counts the endpoint's dead letters read, Recovered those
	// sent again, Skipped those that could not be (undecodable).
	Scanned   int `json:"scanned"`
	Recovered int `json:"recovered"`
	Skipped   int `json:"skipped"`
	// Truncated: the job stopped at its limit; ask again from the time of
	// the last delivery it sent.
	Truncated bool       `json:"truncated"`
	Error     string     `json:"error,omitempty"`
	Started   time.Time  `json:"started"`
	Finished  *time.Time `json:"finished,omitempty"`
}

// recoverJobs are the jobs this replica ran, newest kept: a job runs and
// is reported by the replica that took it.
type recoverJobs struct {
	mu    sync.Mutex
	byID  map[string]*RecoverJobJSON
	order []string
}

// maxJobsKept bounds the finished jobs remembered.
const maxJobsKept = 1000

// recoverJobTimeout bounds one job: reading a week of one endpoint's dead
// letters and producing at most MaxRecover deliveries.
const recoverJobTimeout = 10 * time.Minute

func (j *recoverJobs) add(job *RecoverJobJSON) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.byID == nil {
		j.byID = map[string]*RecoverJobJSON{}
	}
	j.byID[job.ID] = job
	j.order = append(j.order, job.ID)
	for len(j.order) > maxJobsKept {
		old := j.byID[j.order[0]]
		if old != nil && old.Status == "running" {
			break
		}
		delete(j.byID, j.order[0])
		j.order = j.order[1:]
	}
}

func (j *recoverJobs) get(id string) (RecoverJobJSON, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	job, ok := j.byID[id]
	if !ok {
		return RecoverJobJSON{}, false
	}
	return *job, true
}

func (j *recoverJobs) update(job *RecoverJobJSON, fn func(*RecoverJobJSON)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	fn(job)
}

// recoverEndpoint serves POST /v1/endpoints/{endpoint_id}/recover: a job
// that re-sends the endpoint's dead letters of a time window as new
// deliveries marked recover.
func (a *API) recoverEndpoint(r *request) {
	if a.opts.Deliveries.Sink == nil || a.opts.Deliveries.Dead == nil {
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
	job := &RecoverJobJSON{ID: ids.New("rcv"), EndpointID: ep.Id, Since: in.Since.UTC(), Until: in.Until.UTC(),
		Status: "running", Started: now.UTC()}
	a.jobs.add(job)
	go a.runRecover(job, r.caller.tenant)
	setLocation(r, "/v1/endpoints/"+ep.Id+"/recover/"+job.ID)
	snapshot, _ := a.jobs.get(job.ID)
	writeJSON(r.RequestCtx, fasthttp.StatusAccepted, snapshot)
}

func setLocation(r *request, path string) { r.Response.Header.Set("Location", path) }

// runRecover scans the dead letters and re-sends them, updating job.
func (a *API) runRecover(job *RecoverJobJSON, tenant string) {
	ctx, cancel := context.WithTimeout(context.Background(), recoverJobTimeout)
	defer cancel()
	limit := a.opts.Deliveries.MaxRecover
	if limit <= 0 {
		limit = DefaultMaxRecover
	}
	var sendErr error
	sent := 0
	err := a.opts.Deliveries.Dead.Scan(ctx, job.EndpointID, job.Since, job.Until, func(rec *kgo.Record) bool {
		d := &sluicev1.Delivery{}
		if err := proto.Unmarshal(rec.Value, d); err != nil || d.SchemaVersion != sluicev1.SchemaVersion ||
			d.TenantId != tenant || d.EndpointId != job.EndpointID {
			a.jobs.update(job, func(j *RecoverJobJSON) { j.Scanned++; j.Skipped++ })
			return true
		}
		if sent >= limit {
			a.jobs.update(job, func(j *RecoverJobJSON) { j.Truncated = true })
			return false
		}
		fresh := &sluicev1.Delivery{SchemaVersion: sluicev1.SchemaVersion, DeliveryId: ids.New(ids.Delivery),
			TenantId: d.TenantId, EndpointId: d.EndpointId, EventId: d.EventId, EventType: d.EventType,
			EventReceivedAtMs: d.EventReceivedAtMs, Data: d.Data, Origin: sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_RECOVER}
		if sendErr = a.publishDelivery(ctx, fresh); sendErr != nil {
			return false
		}
		sent++
		a.jobs.update(job, func(j *RecoverJobJSON) { j.Scanned++; j.Recovered++ })
		return true
	})
	if err == nil {
		err = sendErr
	}
	a.jobs.update(job, func(j *RecoverJobJSON) {
		done := a.now().UTC()
		j.Finished, j.Status = &done, "done"
		if err != nil {
			j.Status, j.Error = "failed", fmt.Sprintf("stopped after %d deliveries: %v", j.Recovered, err)
		}
	})
	if err != nil {
		a.log.Warn("recover job failed", "job", job.ID, "endpoint", job.EndpointID, "err", err)
	}
}

// getRecoverJob serves GET /v1/endpoints/{endpoint_id}/recover/{job_id}.
func (a *API) getRecoverJob(r *request) {
	id := r.param("endpoint_id")
	if _, ok := a.endpoint(r, id); !ok {
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found", "endpoint "+trunc(id)+" does not exist")
		return
	}
	job, ok := a.jobs.get(r.param("job_id"))
	if !ok || job.EndpointID != id {
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found",
			"recover job "+trunc(r.param("job_id"))+" is not known to this server (jobs are reported by the replica that runs them)")
		return
	}
	writeJSON(r.RequestCtx, fasthttp.StatusOK, job)
}
