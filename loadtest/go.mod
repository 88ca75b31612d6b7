module github.com/sluicehq/sluice/loadtest

go 1.26.0
