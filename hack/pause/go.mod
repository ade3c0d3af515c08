module rheostat.dev/hack/pause

go 1.24
