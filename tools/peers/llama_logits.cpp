// llama.cpp's logits for the last token of each prompt, as JSON: checks that a GGUF written by
// write_gguf.py computes what the Hugging Face model does (write_gguf_test.py compares them with
// the transformers logits of Keel's oracle fixtures). Built against a llama.cpp build:
//
//   g++ -O2 -std=c++17 tools/peers/llama_logits.cpp -I$SRC/include -I$SRC/ggml/include \
//       -L$BUILD/bin -lllama -lggml -lggml-base -Wl,-rpath,$BUILD/bin -o llama-logits
//   ./llama-logits MODEL.gguf 1,2,3 4,5,6,7        # one comma-separated prompt of token ids per argument
//
// Prints [[logit, ...], ...], one list per prompt; every prompt runs in a fresh context on the CPU.
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

static void quiet(ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

int main(int argc, char ** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf IDS [IDS ...]   (IDS: comma-separated token ids)\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params model_params = llama_model_default_params();
    model_params.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[1], model_params);
    if (model == nullptr) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    printf("[");
    for (int p = 2; p < argc; ++p) {
        std::vector<llama_token> tokens;
        std::stringstream ids(argv[p]);
        for (std::string id; std::getline(ids, id, ',');) {
            tokens.push_back((llama_token) std::atoi(id.c_str()));
        }
        llama_context_params ctx_params = llama_context_default_params();
        ctx_params.n_ctx = 512;
        ctx_params.n_batch = 512;
        ctx_params.n_threads = 2;
        ctx_params.n_threads_batch = 2;
        llama_context * ctx = llama_init_from_model(model, ctx_params);
        if (ctx == nullptr || llama_decode(ctx, llama_batch_get_one(tokens.data(), (int32_t) tokens.size())) != 0) {
            fprintf(stderr, "decoding prompt %d failed\n", p - 1);
            return 1;
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        printf(p == 2 ? "[" : ",\n[");
        for (int i = 0; i < n_vocab; ++i) {
            printf(i ? ",%.7g" : "%.7g", logits[i]);
        }
        printf("]");
        llama_free(ctx);
    }
    printf("]\n");
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
