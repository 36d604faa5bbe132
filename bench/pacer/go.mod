module clickwire/bench/pacer

go 1.22
