/* A program that uses deft only through an installed copy: one def step on
 * two workers, then prints the version and the output model's first value.
 * Built by tests/install.cmake with pkg-config and with find_package. */
#include <deft.h>

#include <stdio.h>

static deft_status_t worker(deft_comm_t *comm, void *arg)
{
    float *out = arg;
    size_t sizes[] = {64, 8};
    deft_layout_t layout = {2, sizes, NULL};
    float x0[72], grad[72];
    for (int i = 0; i < 72; i++)
        x0[i] = 1.0f, grad[i] = 0.5f;
    deft_optim_config_t cfg = DEFT_OPTIM_CONFIG_INIT;
    cfg.compressor = DEFT_COMP_NONE;
    cfg.momentum = 0.0f;
    deft_optim_t *opt;
    deft_status_t st = deft_optim_create(&opt, comm, &layout, x0, &cfg);
    if (st != DEFT_OK)
        return st;
    const float *pt;
    deft_optim_ask(opt, &pt);
    st = deft_optim_tell(opt, grad, NULL);
    if (st == DEFT_OK && deft_comm_rank(comm) == 0)
        st = deft_optim_output(opt, out);
    else if (st == DEFT_OK)
        st = deft_optim_output(opt, grad);
    deft_optim_destroy(opt);
    return st;
}

int main(void)
{
    float model[72];
    deft_status_t st = deft_run_threads(2, worker, model);
    if (st != DEFT_OK) {
        fprintf(stderr, "consumer: %s: %s\n", deft_status_str(st),
                deft_last_error());
        return 1;
    }
    /* x = 1 - lr * 0.5 with the default lr 0.1 */
    printf("deft %s model[0] = %.4f\n", deft_version(), (double)model[0]);
    return 0;
}
