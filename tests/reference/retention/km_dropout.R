# Kaplan-Meier of time to dropout per program (R survival survfit defaults: log CI, Greenwood), frozen for
# tests/test_retention.py. Input: dropout_times.csv written by make_times.py.
library(survival)
here <- "tests/reference/retention"
d <- read.csv(file.path(here, "dropout_times.csv"), stringsAsFactors = FALSE)
fit <- survfit(Surv(days, dropped_out) ~ group, data = d)
s <- summary(fit, censored = TRUE)
out <- data.frame(group = sub("group=", "", as.character(s$strata)), day = s$time, estimate = s$surv,
                  ci_low = s$lower, ci_high = s$upper, n_risk = s$n.risk, n_event = s$n.event, n_censor = s$n.censor)
write.csv(out, file.path(here, "km_dropout_R.csv"), row.names = FALSE)
med <- summary(fit)$table
write.csv(data.frame(group = sub("group=", "", rownames(med)), median = med[, "median"],
                     lower = med[, "0.95LCL"], upper = med[, "0.95UCL"]),
          file.path(here, "km_dropout_median_R.csv"), row.names = FALSE)
cat(R.version.string, "survival", as.character(packageVersion("survival")), "\n",
    file = file.path(here, "R_VERSION.txt"))
