module github.com/sluicehq/sluice/services/sender

go 1.26.0
