module sluice/bench/baselines/go

go 1.19
