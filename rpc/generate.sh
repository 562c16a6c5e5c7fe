#!/usr/bin/env bash
# Regenerates rpc/gen/ from the .proto files (needs protoc: apt-get install protobuf-compiler).
# The generated code is committed, so building tp needs no protoc.
set -euo pipefail
cd "$(dirname "$0")"
command -v protoc >/dev/null || { echo "protoc is missing: apt-get install protobuf-compiler" >&2; exit 1; }
rm -rf gen && mkdir gen
protoc --plugin=protoc-gen-ts_proto=../node_modules/.bin/protoc-gen-ts_proto \
  --ts_proto_out=gen \
  --ts_proto_opt=outputServices=grpc-js,env=node,esModuleInterop=true,importSuffix=.js,forceLong=number,useDate=false,oneof=unions-value,useExactTypes=false,snakeToCamel=true \
  -I . -I /usr/include *.proto
