module github.com/sluicehq/sluice/services/ingest

go 1.26.0
