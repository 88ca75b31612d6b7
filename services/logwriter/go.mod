module github.com/sluicehq/sluice/services/logwriter

go 1.26.0
