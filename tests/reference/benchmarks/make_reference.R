# Golden numbers for tests/test_benchmarks.py (run from this directory: Rscript make_reference.R).
# Writes the inputs as CSV and R's estimates as JSON; the Python tests rebuild clinic exports from the CSVs
# and compare analytics.benchmarks against these numbers.  R packages: survival (and base stats).
suppressPackageStartupMessages(library(survival))
set.seed(20261125)

fmt <- function(x) formatC(x, digits = 15, format = "g")
json_obj <- function(lst) {
  items <- vapply(names(lst), function(k) sprintf('"%s": %s', k, fmt(lst[[k]])), character(1))
  paste0("{", paste(items, collapse = ", "), "}")
}

# 1. Kaplan-Meier 1 - S(365) and S(365), log-log interval (Greenwood), 40 patients with ties.
n <- 40
time <- sample(c(30, 60, 90, 120, 150, 200, 250, 300, 365, 400, 450, 500), n, replace = TRUE)
event <- rbinom(n, 1, 0.55)
km <- data.frame(patient_id = sprintf("k%02d", seq_len(n)), time = time, event = event)
write.csv(km, "km_input.csv", row.names = FALSE)
fit <- survfit(Surv(time, event) ~ 1, data = km, conf.type = "log-log")
s <- summary(fit, times = 365)
km_out <- list(surv = s$surv, lower = s$lower, upper = s$upper, n_risk = s$n.risk)

# 2. Mean PDA with a t interval and the Welch difference between two programs.
#    Each patient has one follow-up on day 180 covering days 0-180 (window_days = 181).
m <- 30
prog <- rep(c("ketamine + therapy", "ketamine only"), each = m / 2)
abst <- pmin(181, pmax(0, round(rnorm(m, mean = ifelse(prog == "ketamine + therapy", 140, 115), sd = 35))))
pda <- data.frame(patient_id = sprintf("d%02d", seq_len(m)), program = prog, days_abstinent = abst)
write.csv(pda, "pda_input.csv", row.names = FALSE)
x <- 100 * abst / 181
tt <- t.test(x)
welch <- t.test(x[prog == "ketamine + therapy"], x[prog == "ketamine only"], var.equal = FALSE)
pda_out <- list(mean = unname(tt$estimate), lower = tt$conf.int[1], upper = tt$conf.int[2],
                diff = unname(welch$estimate[1] - welch$estimate[2]),
                diff_lower = welch$conf.int[1], diff_upper = welch$conf.int[2])

# 3. Wilson interval (prop.test without continuity correction) for 13 abstinent of 27.
pt <- prop.test(13, 27, correct = FALSE)
wilson_out <- list(estimate = 13 / 27, lower = pt$conf.int[1], upper = pt$conf.int[2])

writeLines(c("{",
             paste0('  "km": ', json_obj(km_out), ","),
             paste0('  "pda": ', json_obj(pda_out), ","),
             paste0('  "wilson": ', json_obj(wilson_out), ","),
             paste0('  "r_version": "', R.version.string, '", "survival_version": "',
                    as.character(packageVersion("survival")), '"'),
             "}"), "reference.json")
