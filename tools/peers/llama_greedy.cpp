// llama.cpp's greedy continuation of token-id prompts, and its scores for another engine's
// continuation of the same prompts, as JSON: the reference side of tools/peers/gguf_check.sh (Keel
// beside llama.cpp on one GGUF file). Built against a llama.cpp build:
//
//   g++ -O2 -std=c++17 tools/peers/llama_greedy.cpp -I$SRC/include -I$SRC/ggml/include \
//       -L$BUILD/bin -lllama -lggml -lggml-base -Wl,-rpath,$BUILD/bin -o llama-greedy
//   ./llama-greedy MODEL.gguf N_GEN N_GPU_LAYERS < PROMPTS
//
// PROMPTS has one line per prompt: comma-separated prompt ids, then optionally `;` and the other
// engine's continuation (comma-separated ids), then optionally `;` and, per token of that
// continuation, ids whose logits to report there (comma-separated, steps separated by `|`: the
// other engine's top candidates). For each prompt, the output holds
// - "greedy": N_GEN tokens, each the argmax of llama.cpp's logits after the prompt and the tokens
//   before it (no sampler: ties go to the lower id), with "greedy_top2": the two best
//   [id, logit] pairs at each step;
// - "scored": for each token of the other continuation, llama.cpp's logits in that context
//   (prompt + the continuation before it, one batch): its argmax [id, logit], the logit of the
//   other engine's token there, and the [id, logit] of each candidate named for that step.
// Every prompt runs in a fresh KV cache; no BOS is added (the ids are the whole prompt).
#include "llama.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

static void quiet(ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

static std::vector<llama_token> parse_ids(const std::string & text) {
    std::vector<llama_token> ids;
    std::stringstream in(text);
    for (std::string id; std::getline(in, id, ',');) {
        if (!id.empty()) {
            ids.push_back((llama_token) std::atoi(id.c_str()));
        }
    }
    return ids;
}

// The best and second-best ids of a row of logits.
static std::pair<int, int> top2(const float * logits, int n_vocab) {
    int best = 0, second = 1;
    if (logits[second] > logits[best]) {
        std::swap(best, second);
    }
    for (int i = 2; i < n_vocab; ++i) {
        if (logits[i] > logits[best]) {
            second = best;
            best = i;
        } else if (logits[i] > logits[second]) {
            second = i;
        }
    }
    return {best, second};
}

static void fail(const char * what, int prompt) {
    fprintf(stderr, "llama-greedy: %s (prompt %d)\n", what, prompt);
    exit(1);
}

int main(int argc, char ** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.gguf N_GEN N_GPU_LAYERS < PROMPTS   (lines: ids[;other ids], comma-separated)\n", argv[0]);
        return 2;
    }
    const int n_gen = std::atoi(argv[2]);
    std::vector<std::vector<llama_token>> prompts, others;
    std::vector<std::vector<std::vector<llama_token>>> candidates;
    for (std::string line; std::getline(std::cin, line);) {
        if (line.empty()) {
            continue;
        }
        std::vector<std::string> fields;
        std::stringstream in(line);
        for (std::string field; std::getline(in, field, ';');) {
            fields.push_back(field);
        }
        prompts.push_back(parse_ids(fields[0]));
        others.push_back(fields.size() > 1 ? parse_ids(fields[1]) : std::vector<llama_token>());
        std::vector<std::vector<llama_token>> steps;
        if (fields.size() > 2) {
            std::stringstream per_step(fields[2]);
            for (std::string ids; std::getline(per_step, ids, '|');) {
                steps.push_back(parse_ids(ids));
            }
        }
        candidates.push_back(steps);
    }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params model_params = llama_model_default_params();
    model_params.n_gpu_layers = std::atoi(argv[3]);
    llama_model * model = llama_model_load_from_file(argv[1], model_params);
    if (model == nullptr) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    size_t longest = 0;
    for (size_t p = 0; p < prompts.size(); ++p) {
        longest = std::max(longest, prompts[p].size() + std::max<size_t>(n_gen, others[p].size()));
    }
    llama_context_params ctx_params = llama_context_default_params();
    ctx_params.n_ctx = (uint32_t) longest + 16;
    ctx_params.n_batch = ctx_params.n_ctx;
    ctx_params.n_ubatch = ctx_params.n_ctx;
    llama_context * ctx = llama_init_from_model(model, ctx_params);
    if (ctx == nullptr) {
        fprintf(stderr, "cannot create a context\n");
        return 1;
    }
    printf("{\"n_vocab\": %d, \"prompts\": [", n_vocab);
    for (size_t p = 0; p < prompts.size(); ++p) {
        std::vector<llama_token> & prompt = prompts[p];
        if (prompt.empty()) {
            fail("an empty prompt", (int) p);
        }
        // Free-running greedy decoding.
        llama_memory_clear(llama_get_memory(ctx), true);
        std::vector<llama_token> tokens = prompt;
        printf(p ? ",\n{\"greedy\": [" : "\n{\"greedy\": [");
        std::string top_json;
        llama_batch batch = llama_batch_get_one(tokens.data(), (int32_t) tokens.size());
        for (int step = 0; step < n_gen; ++step) {
            if (llama_decode(ctx, batch) != 0) {
                fail("decoding failed", (int) p);
            }
            const float * logits = llama_get_logits_ith(ctx, -1);
            const auto [best, second] = top2(logits, n_vocab);
            printf(step ? ", %d" : "%d", best);
            char pair[128];
            snprintf(pair, sizeof pair, "%s[[%d, %.7g], [%d, %.7g]]", step ? ", " : "", best, logits[best], second, logits[second]);
            top_json += pair;
            tokens.push_back(best);
            batch = llama_batch_get_one(&tokens.back(), 1);
        }
        printf("], \"greedy_top2\": [%s], \"scored\": [", top_json.c_str());
        // The other engine's continuation, scored in one batch.
        const std::vector<llama_token> & other = others[p];
        if (!other.empty()) {
            llama_memory_clear(llama_get_memory(ctx), true);
            const int n = (int) (prompt.size() + other.size() - 1);
            llama_batch scored = llama_batch_init(n, 0, 1);
            for (int i = 0; i < n; ++i) {
                scored.token[i] = i < (int) prompt.size() ? prompt[i] : other[i - prompt.size()];
                scored.pos[i] = i;
                scored.n_seq_id[i] = 1;
                scored.seq_id[i][0] = 0;
                scored.logits[i] = i >= (int) prompt.size() - 1;
            }
            scored.n_tokens = n;
            if (llama_decode(ctx, scored) != 0) {
                fail("scoring the other continuation failed", (int) p);
            }
            for (size_t j = 0; j < other.size(); ++j) {
                const std::vector<llama_token> named = j < candidates[p].size() ? candidates[p][j] : std::vector<llama_token>();
                for (llama_token id : named) {
                    if (id < 0 || id >= n_vocab) {
                        fail("a candidate id is outside the vocabulary", (int) p);
                    }
                }
                if (other[j] < 0 || other[j] >= n_vocab) {
                    fail("an id of the other continuation is outside the vocabulary", (int) p);
                }
                const float * logits = llama_get_logits_ith(ctx, (int32_t) (prompt.size() - 1 + j));
                const int best = top2(logits, n_vocab).first;
                printf("%s{\"argmax\": [%d, %.7g], \"other\": [%d, %.7g], \"candidates\": [", j ? ", " : "", best, logits[best], other[j], logits[other[j]]);
                for (size_t c = 0; c < named.size(); ++c) {
                    printf("%s[%d, %.7g]", c ? ", " : "", named[c], logits[named[c]]);
                }
                printf("]}");
            }
            llama_batch_free(scored);
        }
        printf("]}");
    }
    printf("\n]}\n");
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
