package api_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/ingest/api"
)

// testNoSecretInKafka reads every record of the config topic, aborted
// ones included, and looks for every secret the API showed during the
// test, in every encoding the API uses, and for custom header values. It runs after the other endpoint
// tests, so it sees their secrets too.
func testNoSecretInKafka(t *testing.T, e *env) {
	ctx := ctxT(t)
	// Secrets of its own, so it is meaningful when run alone: a made one,
	// a caller's, and rotations with and without grace.
	_, key := newTenant(t, e.server, "Secrets")
	custom := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a caller's secret of 32 bytes!!!"))
	made := newEndpoint(t, e.server, key, endpointBody(""))
	newEndpoint(t, e.server, key, endpointBody(`"secret":"`+custom+`"`))
	rotate := "/v1/endpoints/" + made.ID + "/rotate-secret"
	call[api.EndpointJSON](t, e.server, 200, "POST", rotate, key, nil)
	call[api.EndpointJSON](t, e.server, 200, "POST", rotate, key, `{"secret":"whsec_`+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("r"), 40))+`"}`)
	call[api.EndpointJSON](t, e.server, 200, "POST", rotate, key, `{"grace_period_seconds":0}`)
	// Custom header values are credentials too.
	headerValues := []string{"Bearer header-credential-in-kafka-0001", "header-credential-in-kafka-0002", "s3cr3t!"}
	withHeaders := newEndpoint(t, e.server, key, endpointBody(`"headers":{"Authorization":"`+headerValues[0]+`","X-Short":"`+headerValues[2]+`"}`))
	call[api.EndpointJSON](t, e.server, 200, "PATCH", "/v1/endpoints/"+withHeaders.ID, key, `{"headers":{"X-Api-Key":"`+headerValues[1]+`"}}`)

	shown := map[string][]byte{} // secret as shown → raw bytes
	for _, s := range e.secrets.all() {
		shown[s] = secretBytes(t, s)
	}
	if len(shown) < 5 {
		t.Fatalf("the API showed %d distinct secrets, want at least 5", len(shown))
	}

	// A plain record at the end, so reading up to the end offset ends on
	// a record rather than a transaction marker.
	if err := e.store.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := kafkax.NewClient(e.k.Config,
		kgo.ConsumeTopics(e.k.Names.Config),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Aborted writes must not hold secrets either.
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kafkax.EndOffsets(ctx, cl, e.k.Names.Config)
	if err != nil {
		t.Fatal(err)
	}
	end := ends[0]

	devBox := devBox(t)
	sealedSeen := map[string]bool{}
	records := 0
	for last := int64(-1); last < end-1; {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read up to offset %d of %d: %v", last, end, err)
		}
		fetches.EachError(func(_ string, _ int32, err error) { t.Fatalf("reading the config topic: %v", err) })
		fetches.EachRecord(func(r *kgo.Record) {
			last = r.Offset
			records++
			for s, raw := range shown {
				for _, form := range [][]byte{raw, []byte(s), []byte(strings.TrimPrefix(s, "whsec_"))} {
					if bytes.Contains(r.Value, form) || bytes.Contains(r.Key, form) {
						t.Fatalf("record %d (key %s) holds the secret %s in clear", r.Offset, r.Key, s)
					}
				}
			}
			if bytes.Contains(r.Value, []byte("whsec_")) {
				t.Fatalf("record %d (key %s) holds whsec_", r.Offset, r.Key)
			}
			for _, v := range headerValues {
				if bytes.Contains(r.Value, []byte(v)) {
					t.Fatalf("record %d (key %s) holds the header value %q in clear", r.Offset, r.Key, v)
				}
			}
			if len(r.Value) == 0 {
				return
			}
			var rec sluicev1.ConfigRecord
			if err := proto.Unmarshal(r.Value, &rec); err != nil {
				t.Fatalf("record %d: %v", r.Offset, err)
			}
			ep := rec.GetEndpoint()
			if ep == nil {
				return
			}
			// The sealed secrets open with the configured key, and only
			// with it, to secrets the API showed.
			for _, sealed := range [][]byte{ep.SecretSealed, ep.PreviousSecretSealed} {
				if sealed == nil {
					continue
				}
				opened, err := e.box.Open(sealed, ep.Id)
				if err != nil {
					t.Fatalf("record %d: the sealed secret of %s does not open: %v", r.Offset, ep.Id, err)
				}
				if _, err := devBox.Open(sealed, ep.Id); err == nil {
					t.Fatalf("record %d: the development key opens the secret of %s", r.Offset, ep.Id)
				}
				s := "whsec_" + base64.StdEncoding.EncodeToString(opened)
				if _, ok := shown[s]; !ok {
					t.Fatalf("record %d: %s has a sealed secret the API never showed", r.Offset, ep.Id)
				}
				sealedSeen[s] = true
			}
		})
	}
	for s := range shown {
		if !sealedSeen[s] {
			t.Fatalf("the secret %.12s… the API showed is in no record, sealed or not: the scan missed records", s)
		}
	}
	t.Logf("%d records, %d secrets, none in clear", records, len(shown))
}

func TestReplicasConvergeAndSurviveRestart(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t)
	box := newBox(t)
	a := startReplica(t, k, box, testOptions())
	b := startReplica(t, k, box, testOptions())

	// A write through one replica shows through the other.
	ten, _, _ := call[api.TenantJSON](t, a.server, 201, "POST", "/v1/tenants", adminKey, `{"name":"Acme"}`)
	eventually(t, "the tenant made through a, on b", func() bool {
		status, _, _ := b.do(t, "GET", "/v1/tenants/"+ten.ID, adminKey, nil)
		return status == 200
	})
	onB, _, _ := call[api.TenantJSON](t, b.server, 200, "GET", "/v1/tenants/"+ten.ID, adminKey, nil)
	wantSameTenant(t, onB, ten)
	apiKey, _, _ := call[api.APIKeyJSON](t, a.server, 201, "POST", "/v1/tenants/"+ten.ID+"/api-keys", adminKey, `{"name":"k"}`)
	key := apiKey.Key
	eventually(t, "the key made through a, on b", func() bool {
		status, _, _ := b.do(t, "GET", "/v1/endpoints", key, nil)
		return status == 200
	})
	ep := newEndpoint(t, b.server, key, `{"url":"https://example.com/hooks","events":["order.*"]}`)
	ep.Secret = ""
	eventually(t, "the endpoint made through b, on a", func() bool {
		status, _, _ := a.do(t, "GET", "/v1/endpoints/"+ep.ID, key, nil)
		return status == 200
	})
	onA, _, _ := call[api.EndpointJSON](t, a.server, 200, "GET", "/v1/endpoints/"+ep.ID, key, nil)
	wantEndpoint(t, onA, ep)

	// If-Match holds across replicas at once, without waiting for the
	// views to converge: a write checks against the latest version.
	path := "/v1/endpoints/" + ep.ID
	v2, _, _ := call[api.EndpointJSON](t, a.server, 200, "PATCH", path, key, `{"description":"v2"}`, "If-Match", quoted(ep.Etag))
	callProblem(t, b.server, 412, "precondition-failed", "PATCH", path, key, `{"description":"stale on b"}`, "If-Match", quoted(ep.Etag))
	v3, _, _ := call[api.EndpointJSON](t, b.server, 200, "PATCH", path, key, `{"max_in_flight":5}`, "If-Match", quoted(v2.Etag))
	if v3.Description != "v2" || v3.MaxInFlight == nil || *v3.MaxInFlight != 5 {
		t.Fatalf("b's patch over a's: %+v", v3)
	}
	callProblem(t, a.server, 412, "precondition-failed", "POST", path+"/disable", key, nil, "If-Match", quoted(v2.Etag))
	rotated, _, _ := call[api.EndpointJSON](t, a.server, 200, "POST", path+"/rotate-secret", key, nil, "If-Match", quoted(v3.Etag))

	// The same etag through both replicas at once: one write wins.
	etag := rotated.Etag
	for round := range 2 {
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		errs := make([]error, 2)
		start := make(chan struct{})
		for i, r := range []*replica{a, b} {
			wg.Go(func() {
				<-start
				statuses[i], _, _, errs[i] = r.send("PATCH", path, key,
					fmt.Sprintf(`{"description":"round %d replica %d"}`, round, i), "If-Match", quoted(etag))
			})
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if !(statuses[0] == 200 && statuses[1] == 412) && !(statuses[0] == 412 && statuses[1] == 200) {
			t.Fatalf("round %d: statuses %v through a and b, want one 200 and one 412", round, statuses)
		}
		winner := 0
		if statuses[1] == 200 {
			winner = 1
		}
		var latest api.EndpointJSON
		for _, r := range []*replica{a, b} {
			eventually(t, "the winner's write on both replicas", func() bool {
				latest, _, _ = call[api.EndpointJSON](t, r.server, 200, "GET", path, key, nil)
				return latest.Description == fmt.Sprintf("round %d replica %d", round, winner)
			})
		}
		etag = latest.Etag
	}

	// Both views end up the same.
	var before api.EndpointJSON
	eventually(t, "the replicas agree", func() bool {
		x, _, rawA := a.do(t, "GET", path, key, nil)
		y, _, rawB := b.do(t, "GET", path, key, nil)
		if x != 200 || y != 200 || !bytes.Equal(rawA, rawB) {
			return false
		}
		before = decodeStrict[api.EndpointJSON](t, rawA)
		return before.Etag == etag
	})
	keysBefore, _, _ := call[page[api.APIKeyJSON]](t, a.server, 200, "GET", "/v1/tenants/"+ten.ID+"/api-keys", adminKey, nil)
	storedBefore, _ := a.store.Endpoint(ep.ID)
	storedBefore = proto.Clone(storedBefore).(*sluicev1.Endpoint)

	// Restart: stop both, start a third on the same topic.
	a.stop()
	b.stop()
	c := startReplica(t, k, box, testOptions())
	tenAfter, _, _ := call[api.TenantJSON](t, c.server, 200, "GET", "/v1/tenants/"+ten.ID, adminKey, nil)
	wantSameTenant(t, tenAfter, ten)
	after, hdr, _ := call[api.EndpointJSON](t, c.server, 200, "GET", path, key, nil)
	wantEtag(t, hdr, before.Etag)
	wantEndpoint(t, after, before)
	keysAfter, _, _ := call[page[api.APIKeyJSON]](t, c.server, 200, "GET", "/v1/tenants/"+ten.ID+"/api-keys", adminKey, nil)
	if len(keysAfter.Data) != 1 || len(keysBefore.Data) != 1 || keysAfter.Data[0] != keysBefore.Data[0] {
		t.Fatalf("keys after the restart %+v, before %+v", keysAfter.Data, keysBefore.Data)
	}
	storedAfter, _ := c.store.Endpoint(ep.ID)
	if !proto.Equal(storedAfter, storedBefore) {
		t.Fatalf("the stored endpoint changed across the restart:\n%v\n%v", storedAfter, storedBefore)
	}
	if len(storedAfter.PreviousSecretSealed) == 0 {
		t.Fatalf("the secret rotated before the restart lost its grace period")
	}
	wantSealed(t, box, storedAfter.SecretSealed, ep.ID, secretBytes(t, rotated.Secret))

	// The etag from before the restart still works, and only once.
	moved, _, _ := call[api.EndpointJSON](t, c.server, 200, "PATCH", path, key, `{"description":"after restart"}`, "If-Match", quoted(before.Etag))
	callProblem(t, c.server, 412, "precondition-failed", "PATCH", path, key, `{"description":"again"}`, "If-Match", quoted(before.Etag))
	if moved.Description != "after restart" {
		t.Fatalf("patch after restart: %+v", moved)
	}
}
